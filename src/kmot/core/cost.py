"""Multiply-accumulates of a model's convolutions and Dense layers, from its graph."""

from __future__ import annotations

import math

import keras

from kmot.core.selection import walk_layers

__all__ = ["macs"]

_L = keras.layers


def _output_positions(layer) -> int:
    shape = layer.output.shape if not isinstance(layer.output, list) else layer.output[0].shape
    return math.prod(d for d in shape[1:-1] if d) if len(shape) > 2 else 1


def macs(model: keras.Model) -> int:
    """Multiply-accumulates per sample of every conv, depthwise, separable and Dense layer.

    A kernel's MACs are its size times the positions it is applied at (output
    positions; a transposed conv's and a Dense's input positions); activations, normalization and pooling are not counted.

    Example:
        >>> macs(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
        12
    """
    total = 0
    for layer in walk_layers(model):
        if not layer.built or not layer._inbound_nodes:
            continue
        if isinstance(layer, (_L.SeparableConv1D, _L.SeparableConv2D)):
            kernel = math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
        elif isinstance(layer, (_L.Conv1D, _L.Conv2D, _L.Conv3D, _L.DepthwiseConv1D,
                                _L.DepthwiseConv2D, _L.Dense, _L.Conv1DTranspose,
                                _L.Conv2DTranspose, _L.Conv3DTranspose)):
            kernel = math.prod(layer.kernel.shape)
        else:
            continue
        if isinstance(layer, (_L.Dense, _L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)):
            # A Dense runs once per leading position; a transposed conv once per input position.
            shape = layer.input.shape
            total += kernel * (math.prod(d for d in shape[1:-1] if d) if len(shape) > 2 else 1)
        else:
            total += kernel * _output_positions(layer)
    return int(total)
