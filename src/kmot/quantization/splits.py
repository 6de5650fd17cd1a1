"""Layers rewritten as the ops LiteRT runs, so that each gets its own int8 scale.

Each rewrite returns a small nested model named like the layer, carrying the
transforms (masks, clusters) of the weights it moves (`kmot.core.rewrap`).
"""

from __future__ import annotations

import keras

from kmot.core import Carried, OptimizedLayer, rewrap
from kmot.quantization.quantizers import DEPTHWISE, FakeQuantTransform

__all__ = ["ExpandAxis", "SqueezeAxis", "conv1d_as_conv2d", "split_separable", "is_plain_conv1d"]


@keras.saving.register_keras_serializable(package="kmot")
class ExpandAxis(keras.layers.Layer):
    """``ops.expand_dims(x, axis)`` as a layer (one EXPAND_DIMS op in LiteRT)."""

    def __init__(self, axis: int, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, x):
        return keras.ops.expand_dims(x, self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="kmot")
class SqueezeAxis(ExpandAxis):
    """``ops.squeeze(x, axis)`` as a layer (one SQUEEZE op in LiteRT)."""

    def call(self, x):
        return keras.ops.squeeze(x, self.axis)


def _unwrap(layer):
    return layer.layer if isinstance(layer, OptimizedLayer) else layer


def is_plain_conv1d(layer) -> bool:
    return isinstance(layer, keras.layers.Conv1D) and not isinstance(
        layer, (keras.layers.Conv1DTranspose, keras.layers.SeparableConv1D,
                keras.layers.DepthwiseConv1D))


def _carry(source, new, moves: dict[str, tuple[str, tuple | None]], axis) -> OptimizedLayer:
    """`new` wrapped with `source`'s chains moved onto it, then fake quantization."""
    chains = {}
    if isinstance(source, OptimizedLayer):
        chains = {new_key: Carried(source, old_key, shape=shape)
                  for new_key, (old_key, shape) in moves.items()}
    wrapped = rewrap(new, chains)
    if not isinstance(wrapped, OptimizedLayer):
        wrapped = OptimizedLayer(new, {})
        wrapped.build_from_config({"layer": new.get_build_config()})
    wrapped.add_transform("kernel", FakeQuantTransform(axis=axis))
    return wrapped


def conv1d_as_conv2d(layer) -> keras.Model:
    """A Conv1D as the 1 x k Conv2D LiteRT runs it as, with per-channel weights.

    Keras runs Conv1D on expand_dims(kernel), and the converter cannot carry a
    per-channel axis through that; a real Conv2D takes it directly. The file gets
    RESHAPE, CONV_2D, RESHAPE, as for a float Conv1D (EXPAND_DIMS, CONV_2D, RESHAPE).
    """
    inner = _unwrap(layer)
    cfg = inner.get_config()
    conv = keras.layers.Conv2D(
        cfg["filters"], (1, cfg["kernel_size"][0]), strides=(1, cfg["strides"][0]),
        padding=cfg["padding"], dilation_rate=(1, cfg["dilation_rate"][0]),
        groups=cfg.get("groups", 1), activation=cfg["activation"], use_bias=cfg["use_bias"],
        name=f"{inner.name}_2d")
    channels = int(inner.kernel.shape[1] * cfg.get("groups", 1))
    conv.build((None, 1, None, channels))
    conv.kernel.assign(inner.kernel.numpy()[None])
    moves = {"kernel": ("kernel", tuple(inner.kernel.shape))}
    if cfg["use_bias"]:
        conv.bias.assign(inner.bias.numpy())
        moves["bias"] = ("bias", None)
    wrapped = _carry(layer, conv, moves, axis=-1)
    inputs = keras.Input((None, channels))
    out = SqueezeAxis(1, name=f"{inner.name}_squeeze")(
        wrapped(ExpandAxis(1, name=f"{inner.name}_expand")(inputs)))
    return keras.Model(inputs, out, name=inner.name)


def split_separable(layer, quantizer) -> keras.Model:
    """A SeparableConv as the depthwise + 1x1 conv LiteRT runs, each quantized.

    The tensor between the two convolutions gets its own activation quantizer
    (LiteRT requantizes there) when `quantizer` is given.
    """
    inner = _unwrap(layer)
    one_d = isinstance(inner, keras.layers.SeparableConv1D)
    cfg = inner.get_config()
    depthwise = (keras.layers.DepthwiseConv1D if one_d else keras.layers.DepthwiseConv2D)(
        kernel_size=cfg["kernel_size"], strides=cfg["strides"], padding=cfg["padding"],
        depth_multiplier=cfg["depth_multiplier"], dilation_rate=cfg["dilation_rate"],
        data_format=cfg["data_format"], use_bias=False, name=f"{inner.name}_depthwise")
    pointwise = (keras.layers.Conv1D if one_d else keras.layers.Conv2D)(
        cfg["filters"], 1, use_bias=cfg["use_bias"], activation=cfg["activation"],
        data_format=cfg["data_format"], name=f"{inner.name}_pointwise")
    input_shape = (None,) + tuple(inner.get_build_config()["input_shape"][1:])
    depthwise.build(input_shape)
    depthwise.kernel.assign(inner.depthwise_kernel.numpy())
    pointwise.build(depthwise.compute_output_shape(input_shape))
    pointwise.kernel.assign(inner.pointwise_kernel.numpy())
    point_moves = {"kernel": ("pointwise_kernel", None)}
    if cfg["use_bias"]:
        pointwise.bias.assign(inner.bias.numpy())
        point_moves["bias"] = ("bias", None)
    dw = _carry(layer, depthwise, {"kernel": ("depthwise_kernel", None)}, axis=DEPTHWISE)
    pw = _carry(layer, pointwise, point_moves, axis=-1)
    inputs = keras.Input(batch_shape=input_shape)
    h = dw(inputs)
    if quantizer is not None:
        h = quantizer(f"{inner.name}_depthwise")(h)
    return keras.Model(inputs, pw(h), name=inner.name)
