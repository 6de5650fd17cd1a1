"""Layers that compute ``x * scale + shift`` per channel at inference.

BatchNormalization (inference statistics), Normalization (preprocessing inside
the model) and keras.applications' ConvNeXt LayerScale all do. Each either folds
into the linear layer before it (`fold.py`) or, where nothing can take it (after
a Concatenate, at the input), runs as the 1x1 depthwise convolution with
per-channel int8 weights that LiteRT executes exactly (`splits.py`): as two
elementwise ops its per-channel constants would be quantized per tensor.
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["channel_affine"]


def _last_axis(axis, rank: int) -> bool:
    axes = axis if isinstance(axis, (list, tuple)) else (axis,)
    return len(axes) == 1 and axes[0] is not None and axes[0] % rank == rank - 1


def _batch_norm(layer, rank):
    if not _last_axis(layer.axis, rank):
        return None
    gamma = layer.gamma.numpy() if layer.scale else 1.0
    beta = layer.beta.numpy() if layer.center else 0.0
    scale = gamma / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
    return scale, beta - layer.moving_mean.numpy() * scale


def _normalization(layer, rank):
    if not _last_axis(layer.axis, rank) or layer.mean is None:
        return None
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean)).reshape(-1)
    std = np.maximum(np.sqrt(np.asarray(keras.ops.convert_to_numpy(layer.variance)).reshape(-1)),
                     keras.backend.epsilon())
    if layer.invert:
        return std, mean
    return 1.0 / std, -mean / std


def _layer_scale(layer, rank):
    gamma = layer.gamma.numpy()
    return gamma, np.zeros_like(gamma)


def _is_layer_scale(layer) -> bool:
    # keras.applications.convnext.LayerScale: `x * gamma` over the last axis.
    return type(layer).__name__ == "LayerScale" and type(layer).__module__.startswith(
        "keras.src.applications") and hasattr(layer, "gamma")


def channel_affine(layer: keras.layers.Layer, rank: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, shift)`` along the last axis of a `rank`-D input, or None.

    Args:
        layer: a built layer.
        rank: the rank of its input (batch included).
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        found = _batch_norm(layer, rank)
    elif isinstance(layer, keras.layers.Normalization):
        found = _normalization(layer, rank)
    elif _is_layer_scale(layer):
        found = _layer_scale(layer, rank)
    else:
        return None
    if found is None:
        return None
    scale, shift = found
    channels = int(np.size(scale)) if np.ndim(scale) else int(np.size(shift))
    scale = np.broadcast_to(np.asarray(scale, np.float32), (channels,)).copy()
    shift = np.broadcast_to(np.asarray(shift, np.float32), (channels,)).copy()
    return scale, shift
