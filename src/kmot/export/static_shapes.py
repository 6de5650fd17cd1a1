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


def _reshape_call(original):
    from keras.src.ops import operation_utils

    def call(self, inputs):
        dims = tuple(inputs.shape)[1:]
        if not _static(dims):
            return original(self, inputs)
        target = operation_utils.compute_reshape_output_shape(dims, self.target_shape, "target_shape")
        if not _static(target):
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
