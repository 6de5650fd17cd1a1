"""kmot: model optimization for Keras 3 models deployed with LiteRT.

The package root only re-exports. Subpackages load on first use, so
``import kmot`` stays light (it never imports TensorFlow or LiteRT); kmot's Keras
classes register when Keras is imported, so saved kmot models load after
``import kmot`` alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kmot import _serializable
from kmot.errors import KmotError

__version__ = "0.1.0"

_SUBPACKAGES = (
    "clustering",
    "core",
    "data",
    "decomposition",
    "distillation",
    "errors",
    "evaluate",
    "export",
    "quantization",
    "recipes",
    "registry",
    "search",
    "sparsity",
)

__all__ = ["KmotError", "__version__", *_SUBPACKAGES]

_serializable.install()

if TYPE_CHECKING:  # pragma: no cover
    from kmot import (  # noqa: F401
        clustering,
        core,
        data,
        decomposition,
        distillation,
        errors,
        evaluate,
        export,
        quantization,
        recipes,
        registry,
        search,
        sparsity,
    )


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"kmot.{name}")
    raise AttributeError(f"module 'kmot' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
