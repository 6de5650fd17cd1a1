"""Export-time tracing of LayerNormalization without NEG, so it quantizes to int8.

Keras computes ``x * inv + (-mean * inv + beta)``; LiteRT has no integer NEG, so a
full-int8 file of any transformer kept one float op per LayerNormalization. The
same value as ``(x - mean) * rsqrt(var + eps) * gamma + beta`` is SUB, MUL, MEAN,
RSQRT and ADD, all with int8 kernels. kmot traces the model for export under
`centered_layer_norms()`; the model is unchanged afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
from keras import ops

__all__ = ["centered_layer_norms"]


def _centered_call(original):
    def call(self, inputs):
        if self.rms_scaling or keras.backend.backend() != "tensorflow":
            return original(self, inputs)
        axis = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        x = ops.cast(inputs, "float32")
        ndims = len(x.shape)
        shape = [1] * ndims
        for dim in axis:
            shape[dim] = x.shape[dim]

        def broadcast(v):
            v = ops.cast(v, "float32")
            return v if sorted(a % ndims for a in axis) == [ndims - 1] else ops.reshape(v, shape)

        centered = x - ops.mean(x, axis=axis, keepdims=True)
        variance = ops.mean(ops.square(centered), axis=axis, keepdims=True)
        out = centered * ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            out = out * broadcast(self.gamma)
        if self.beta is not None:
            out = out + broadcast(self.beta)
        return ops.cast(out, self.compute_dtype)

    return call


@contextlib.contextmanager
def centered_layer_norms() -> Iterator[None]:
    """While active, LayerNormalization computes ``(x - mean) * rsqrt(var + eps)``."""
    cls = keras.layers.LayerNormalization
    original = cls.call
    cls.call = _centered_call(original)
    try:
        yield
    finally:
        cls.call = original
