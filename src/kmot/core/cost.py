"""Multiply-accumulates of a model's convolutions and Dense layers, from its graph."""

from __future__ import annotations

import math

import keras

from kmot.core.selection import walk_layers

__all__ = ["macs", "layer_macs"]

_L = keras.layers


def _positions(shape) -> int:
    """Positions a channels-last kernel is applied at: every axis but batch and channels."""
    return math.prod(d for d in shape[1:-1] if d) if len(shape) > 2 else 1


def _first(tensors):
    return tensors[0] if isinstance(tensors, (list, tuple)) else tensors


def layer_macs(layer: keras.layers.Layer) -> int:
    """Multiply-accumulates per sample of one call of a conv, depthwise, separable,
    Dense or EinsumDense layer (0 for other layers and for layers never called).

    A kernel's MACs are its size times the positions it is applied at (output
    positions; a transposed conv's and a Dense's input positions); an
    EinsumDense does one MAC per output element and contracted kernel entry.

    Example:
        >>> model = keras.Sequential([keras.Input((5, 4)), keras.layers.Dense(3)])
        >>> layer_macs(model.layers[0])
        60
    """
    if not layer.built or not layer._inbound_nodes:
        return 0
    if isinstance(layer, _L.EinsumDense):
        from kmot.core.kernels import kernels

        kernel = kernels(layer)[0]
        contracted = math.prod(int(kernel.variable.shape[a]) for a in kernel.in_axes())
        return int(math.prod(d for d in _first(layer.output).shape[1:] if d) * contracted)
    if isinstance(layer, (_L.SeparableConv1D, _L.SeparableConv2D)):
        kernel = math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
    elif isinstance(layer, (_L.Conv1D, _L.Conv2D, _L.Conv3D, _L.DepthwiseConv1D,
                            _L.DepthwiseConv2D, _L.Dense, _L.Conv1DTranspose,
                            _L.Conv2DTranspose, _L.Conv3DTranspose)):
        kernel = math.prod(layer.kernel.shape)
    else:
        return 0
    if isinstance(layer, (_L.Dense, _L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)):
        # A Dense runs once per leading position; a transposed conv once per input position.
        return int(kernel * _positions(_first(layer.input).shape))
    return int(kernel * _positions(_first(layer.output).shape))


def macs(model: keras.Model) -> int:
    """Multiply-accumulates per sample of every conv, depthwise, separable, Dense and
    EinsumDense layer (see `layer_macs`); activations, normalization and pooling are
    not counted.

    Example:
        >>> macs(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
        12
    """
    return int(sum(layer_macs(layer) for layer in walk_layers(model)))
