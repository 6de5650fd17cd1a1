"""Transforms that keep a structure a weight already has: its zeros, its shared values.

What quantization-aware training of a pruned or clustered model that was already
stripped puts at the head of each weight's chain, so that the zeros and the
shared values it finds in the weight survive fine-tuning and export. They read
the value they are built on (the chain so far), not how it came to be: no
technique is named here.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from kmot.core.transform import WeightTransform

__all__ = ["KeepZerosTransform", "SharedValuesTransform", "apply_mask", "take_shared"]


def apply_mask(value, mask):
    """`value` where `mask` > 0, else exactly +0.0."""
    # `where`, not `value * mask`: a product gives -0.0 for negative weights, and
    # zeros of mixed sign break the byte runs that gzip compresses (~15% larger).
    return ops.where(ops.greater(mask, 0), value, ops.zeros_like(value))


def _take_bincount(values, index):
    """``take(values, index)`` whose gradient for `values` is a weighted bincount.

    The gradient of a gather is a scatter-add of every weight's gradient into k
    slots; TensorFlow's (unsorted_segment_sum) is 13x slower than bincount on
    a 0.5M-weight kernel: with it a clustering's forward and backward took
    15.3 ms there, with bincount 8.8 ms.

    The bincount's length is the constant k. ``ops.bincount`` (``tf.math.bincount``)
    computes it from ``max(index) + 1``, a value XLA needs at compile time: under
    ``jit_compile=True`` (Keras's default for TensorFlow on a GPU) the step either
    failed or, with the index read from a variable, recompiled on every step (2-3 s
    a step for a small clustered conv model, against 8 ms with the constant).
    """
    import tensorflow as tf  # only TensorFlow takes this path (`take_shared`)

    @ops.custom_gradient
    def take(values):
        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            return tf.raw_ops.DenseBincount(input=index, size=values.shape[0], weights=upstream)

        return ops.take(values, index), grad

    return take(values)


def take_shared(values, index):
    """``take(values, index)`` for a few shared values gathered by many weights."""
    # Only TensorFlow's gather gradient is slow. JAX's bincount needs a length
    # known when traced (keras.ops.bincount gives none), and torch has no
    # ops.custom_gradient: both use the gather's own gradient (a scatter-add).
    if keras.backend.backend() == "tensorflow":
        return _take_bincount(values, index)
    return ops.take(values, index)


@keras.saving.register_keras_serializable(package="kmot")
class KeepZerosTransform(WeightTransform):
    """Keeps exactly zero the weights that are zero when it is built (a fixed mask)."""

    def build(self, weight, add_weight):
        keep = (weight.numpy() != 0).astype("float32")
        self.mask = add_weight("keep", weight.shape, initializer=keras.initializers.Constant(keep))

    def __call__(self, value, *, training):
        return apply_mask(value, self.mask.value)


@keras.saving.register_keras_serializable(package="kmot")
class SharedValuesTransform(WeightTransform):
    """Keeps a weight on the few values it holds when built; the values train.

    Each weight keeps the value it shares with others (a fixed assignment); the
    shared values are trainable, as in cluster-preserving QAT. With
    `keep_zeros`, weights that are zero stay exactly zero.

    Args:
        number_of_values: how many values the weight holds (its state's size; at
            least the number of distinct values it is built on).
        keep_zeros: zero weights stay zero (sparsity-preserving).
    """

    def __init__(self, number_of_values: int, *, keep_zeros: bool = False):
        self.number_of_values = int(number_of_values)
        self.keep_zeros = keep_zeros

    def build(self, weight, add_weight):
        value = weight.numpy()
        distinct, index = np.unique(value, return_inverse=True)
        if distinct.size > self.number_of_values:
            # A rebuilt layer (cloned, loaded) is built on fresh weights before its
            # state is restored: only the shapes matter here, not the values.
            distinct = np.quantile(value, np.linspace(0, 1, self.number_of_values))
            index = np.abs(value.reshape(-1, 1) - distinct).argmin(axis=1)
        padded = np.resize(distinct, self.number_of_values).astype("float32")
        self.values = add_weight("values", padded.shape, trainable=True,
                                 initializer=keras.initializers.Constant(padded))
        self.index = add_weight("index", weight.shape, dtype="int32",
                                initializer=keras.initializers.Constant(index.reshape(weight.shape)))
        if self.keep_zeros:
            keep = (value != 0).astype("float32")
            self.keep = add_weight("keep", weight.shape, initializer=keras.initializers.Constant(keep))

    def __call__(self, value, *, training):
        flat = take_shared(self.values.value, ops.reshape(self.index.value, (-1,)))
        # (+ 0 * value: the weight itself gets a zero gradient rather than none,
        # which optimizers would warn about at every fit.)
        shared = ops.cast(ops.reshape(flat, ops.shape(value)), value.dtype) + 0.0 * value
        return apply_mask(shared, self.keep.value) if self.keep_zeros else shared

    def get_config(self) -> dict[str, Any]:
        return {"number_of_values": self.number_of_values, "keep_zeros": self.keep_zeros}
