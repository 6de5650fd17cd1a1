"""Folding BatchNormalization (and other per-channel affine layers) into the
convolution or Dense layer before it.

After folding, the layer's kernel and bias are what inference computes with, so
quantization-aware training fake-quantizes exactly the weights LiteRT stores.
The folded layer becomes a `FoldedBatchNorm` pass-through (names are kept). A
producer that carries transforms (a pruned or clustered layer, not yet stripped)
keeps them: they go on running on the kernel as it was, scaled after.
"""

from __future__ import annotations

import keras
import numpy as np

from kmot.core import Carried, OptimizedLayer, clone_model, kernels, rewrap
from kmot.core.selection import walk_layers
from kmot.quantization.affine import channel_affine

__all__ = ["fold_batch_norms", "foldable_pairs", "FoldedBatchNorm"]


@keras.saving.register_keras_serializable(package="kmot")
class FoldedBatchNorm(keras.layers.Layer):
    """What is left of a BatchNormalization (or other per-channel affine layer)
    folded into the layer before it: nothing.

    Keeps the layer's name and a call signature taking ``training`` and ``mask``
    so that the graph around it is unchanged.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


_FOLDABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
             keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def _linear(layer) -> bool:
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def _fold_target(producer) -> bool:
    """A linear Dense / conv / depthwise conv whose transforms (if any) are on its kernel."""
    inner = producer.layer if isinstance(producer, OptimizedLayer) else producer
    if not isinstance(inner, _FOLDABLE) or not _linear(inner) or len(kernels(inner)) != 1:
        return False
    if isinstance(producer, OptimizedLayer):
        return set(k for k, chain in producer.transforms.items() if chain) <= {"kernel"}
    return True


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """``{producer_name: affine_name}`` for every per-channel affine layer that can fold.

    A BatchNormalization (or Normalization, or ConvNeXt's LayerScale) folds when
    it scales the last axis of the output of a linear conv / depthwise conv /
    Dense layer that is used once and feeds nothing else.
    """
    pairs = {}
    for layer in walk_layers(model):
        if len(layer._inbound_nodes) != 1 or isinstance(layer, OptimizedLayer):
            continue
        inputs = layer._inbound_nodes[0].input_tensors
        if len(inputs) != 1 or channel_affine(layer, len(inputs[0].shape)) is None:
            continue
        history = getattr(layer.input, "_keras_history", None)
        producer = history.operation if history else None
        if (isinstance(producer, keras.layers.Layer) and _fold_target(producer)
                and len(producer._inbound_nodes) == 1 and len(producer._outbound_nodes) == 1):
            pairs[producer.name] = layer.name
    return pairs


def _folded(producer, affine):
    """A copy of `producer` with `affine` (its inference-time scale and shift) folded in."""
    inner = producer.layer if isinstance(producer, OptimizedLayer) else producer
    scale, shift = channel_affine(affine, len(affine.input.shape))
    kernel = kernels(inner)[0]
    value = kernel.variable.numpy()
    out_axes = kernel.out_axes()
    # The per-channel scale laid along the kernel's output axes (both of a depthwise one).
    broadcast = [value.shape[a] if a in out_axes else 1 for a in range(value.ndim)]
    factor = scale.reshape(broadcast).astype(value.dtype)
    bias = inner.bias.numpy() if inner.use_bias else np.zeros(scale.shape, value.dtype)
    new = type(inner).from_config(inner.get_config() | {"use_bias": True})
    new.build_from_config(inner.get_build_config())
    new.kernel.assign(value * factor)
    new.bias.assign((bias * scale + shift).astype(value.dtype))
    if isinstance(producer, OptimizedLayer):
        return rewrap(new, {"kernel": Carried(producer, "kernel", scale=factor)}, name=producer.name)
    return new


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """Returns a copy of `model` with every foldable BatchNormalization (and other
    per-channel affine layer, see `foldable_pairs`) folded.

    Example:
        >>> folded = fold_batch_norms(model)  # doctest: +SKIP
    """
    pairs = foldable_pairs(model)
    if not pairs:
        return clone_model(model)
    bns = {bn: producer for producer, bn in pairs.items()}
    originals = {layer.name: layer for layer in walk_layers(model)}

    def replace(layer):
        if layer.name in pairs:
            return _folded(layer, originals[pairs[layer.name]])
        if layer.name in bns:
            return FoldedBatchNorm(name=layer.name)
        return None

    return clone_model(model, replace=replace)
