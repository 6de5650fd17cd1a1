"""Whether the graph being traced is the one a converter reads.

A layer may simulate a deployment op more exactly than the op a converter
recognizes: `kmot.quantization`'s input quantizers round ties as LiteRT's QUANTIZE
does, which TensorFlow's FakeQuant (the op the converter turns into QUANTIZE)
does not. LiteRT and ONNX export trace under `converter_trace()`; such a layer
then emits the recognized op alone. Every other trace (fit, predict, evaluate, a
SavedModel, which runs the float graph as Keras does) simulates.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["converter_trace", "traced_for_converter"]

_FOR_CONVERTER = contextvars.ContextVar("kmot_traced_for_converter", default=False)


@contextlib.contextmanager
def converter_trace() -> Iterator[None]:
    """Marks the traces inside as the graph a converter reads.

    Example:
        >>> with converter_trace():
        ...     traced_for_converter()
        True
        >>> traced_for_converter()
        False
    """
    token = _FOR_CONVERTER.set(True)
    try:
        yield
    finally:
        _FOR_CONVERTER.reset(token)


def traced_for_converter() -> bool:
    """True inside `converter_trace()`."""
    return _FOR_CONVERTER.get()
