"""Export-time tracing of Keras 3's Flatten and Reshape with a static target shape.

Keras 3's `Flatten` and `Reshape` reshape to ``(shape(x)[0], ...)``: the batch
size is read from the tensor at run time, so a LiteRT file with a dynamic batch
carries SHAPE, STRIDED_SLICE and PACK ops in front of every such RESHAPE. When
the non-batch dimensions are known, ``reshape(x, (-1, ...))`` computes the same
result with a constant shape: the converter then emits one RESHAPE. kmot traces
the model for export under `static_batch_reshapes()`; the model is unchanged
afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import keras
from keras import ops

__all__ = ["static_batch_reshapes"]


def _static(dims) -> bool:
    return all(isinstance(d, int) for d in dims) and math.prod(dims) > 0


def _flatten_call(original):
    def call(self, inputs):
        dims = tuple(inputs.shape)[1:]
        if self._channels_first or not dims or not _static(dims):
            return original(self, inputs)
        return ops.reshape(inputs, (-1, math.prod(dims)))

    return call


def _resolved(dims: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...] | None:
    """`target` with its -1 filled in from `dims`; None where Keras must decide (or raise)."""
    known = math.prod(d for d in target if d != -1)
    if not all(isinstance(d, int) for d in target) or target.count(-1) > 1 or known <= 0:
        return None
    total = math.prod(dims)
    if -1 not in target:
        return target if known == total else None
    return tuple(total // known if d == -1 else d for d in target) if total % known == 0 else None


def _reshape_call(original):
    def call(self, inputs):
        dims = tuple(inputs.shape)[1:]
        target = _resolved(dims, tuple(self.target_shape)) if _static(dims) else None
        if target is None:
            return original(self, inputs)
        return ops.reshape(inputs, (-1, *target))

    return call


@contextlib.contextmanager
def static_batch_reshapes() -> Iterator[None]:
    """While active, Flatten and Reshape with known non-batch dims reshape to ``(-1, ...)``."""
    patched = [(keras.layers.Flatten, _flatten_call), (keras.layers.Reshape, _reshape_call)]
    originals = [(cls, cls.call) for cls, _ in patched]
    try:
        for cls, make in patched:
            cls.call = make(cls.call)
        yield
    finally:
        for cls, call in originals:
            cls.call = call
