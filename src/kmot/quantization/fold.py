"""Folding BatchNormalization into the convolution or Dense layer before it.

After folding, the layer's kernel and bias are what inference computes with, so
quantization-aware training fake-quantizes exactly the weights LiteRT stores.
The BatchNormalization layer becomes a `FoldedBatchNorm` pass-through (names are kept).
"""

from __future__ import annotations

import keras
import numpy as np

from kmot.core import clone_model
from kmot.core.selection import walk_layers

__all__ = ["fold_batch_norms", "foldable_pairs", "FoldedBatchNorm"]


@keras.saving.register_keras_serializable(package="kmot")
class FoldedBatchNorm(keras.layers.Layer):
    """What is left of a BatchNormalization folded into the layer before it: nothing.

    Keeps the BN's name and call signature (``training``, ``mask``) so that the
    graph around it is unchanged.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

_FOLDABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
             keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _linear(layer) -> bool:
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """``{producer_name: bn_name}`` for every BatchNormalization that can fold.

    A BN folds when it normalizes the last axis of the output of a linear conv /
    depthwise conv / Dense layer that is used once and feeds nothing else.
    """
    pairs = {}
    for bn in walk_layers(model):
        if not isinstance(bn, keras.layers.BatchNormalization) or len(bn._inbound_nodes) != 1:
            continue
        rank = len(bn.input.shape)
        if bn.axis not in (-1, rank - 1):
            continue
        history = getattr(bn.input, "_keras_history", None)
        producer = history.operation if history else None
        if (isinstance(producer, _FOLDABLE) and _linear(producer)
                and not isinstance(producer, keras.layers.Conv1DTranspose)
                and len(producer._inbound_nodes) == 1 and len(producer._outbound_nodes) == 1):
            pairs[producer.name] = bn.name
    return pairs


def _folded(layer, bn):
    """A copy of `layer` with `bn` (inference statistics) folded into it."""
    gamma = bn.gamma.numpy() if bn.scale else 1.0
    beta = bn.beta.numpy() if bn.center else 0.0
    scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    shift = beta - bn.moving_mean.numpy() * scale
    kernel = layer.kernel.numpy()
    bias = layer.bias.numpy() if layer.use_bias else np.zeros(scale.shape, kernel.dtype)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel * scale
    config = layer.get_config() | {"use_bias": True}
    new = type(layer).from_config(config)
    new.build_from_config(layer.get_build_config())
    new.kernel.assign(kernel.astype(layer.kernel.dtype))
    new.bias.assign((bias * scale + shift).astype(layer.kernel.dtype))
    return new


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """Returns a copy of `model` with every foldable BatchNormalization folded.

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

