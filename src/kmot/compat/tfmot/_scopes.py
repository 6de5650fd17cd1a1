"""tfmot's ``*_scope()`` loaders: kmot's classes are registered when kmot is imported,
so a scope only adds the custom objects the caller passes."""

from __future__ import annotations

from typing import Any

import keras


def custom_scope(*scopes: dict[str, Any]) -> Any:
    """A `keras.saving.custom_object_scope` of the given dicts (kmot's own need none)."""
    merged: dict[str, Any] = {}
    for scope in scopes:
        merged.update(scope)
    return keras.saving.custom_object_scope(merged)
