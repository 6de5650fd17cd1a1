"""tfmot's ``*_scope()`` loaders: kmot's classes are registered when kmot is imported,
so a scope only adds the custom objects the caller passes."""

from __future__ import annotations

from typing import Any

import keras

from kmot.errors import KmotError


def custom_scope(*scopes: dict[str, Any]) -> Any:
    """A `keras.saving.custom_object_scope` of the given dicts (kmot's own need none)."""
    merged: dict[str, Any] = {}
    for scope in scopes:
        merged.update(scope)
    return keras.saving.custom_object_scope(merged)


WRAPPER = ("kmot wraps an optimized layer in kmot.core.OptimizedLayer, whatever the "
           "technique (isinstance(layer, kmot.core.OptimizedLayer) finds them, "
           "layer.transforms lists what each weight carries)")


class UnmatchedName(KmotError, AttributeError):
    """A tfmot name kmot has no counterpart for; an AttributeError too, so ``hasattr``
    and ``getattr(module, name, default)`` behave as for any missing name."""


def unmatched(module: str, natives: dict[str, str]):
    """A module ``__getattr__`` that answers tfmot's names without a kmot counterpart
    (its wrapper classes, its private modules) with the native way, and any other
    missing name with the usual AttributeError."""

    def __getattr__(name: str) -> Any:
        if name in natives:
            raise UnmatchedName(
                f"{module}.{name} is tfmot's own and kmot has no counterpart of it. "
                f"Expected the native way: {natives[name]}. Received: a use of {name}")
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
