"""Layers rewritten as the ops LiteRT runs, so that each gets its own int8 scale.

Each rewrite returns a small nested model named like the layer, carrying the
transforms (masks, clusters) of the weights it moves (`kmot.core.rewrap`).

With `int32_bias`, a convolution gets its bias on LiteRT's int32 grid
(`BiasQuantTransform`), on the grid of the nested model's input or of one of its
quantizers, also through the reshapes around a Conv1D as a 1 x k Conv2D or a Dense
or an affine on 3-D inputs (the nested model is a `kmot.core.nested.PlacedModel`,
so that the convolution sees the grid it is placed on).
"""

from __future__ import annotations

import keras
import numpy as np

from kmot.core import Carried, OptimizedLayer, rewrap
from kmot.core.nested import PlacedModel
from kmot.quantization.bias import BiasQuantTransform
from kmot.quantization.quantizers import DEPTHWISE, FakeQuantTransform

__all__ = ["ExpandAxis", "SqueezeAxis", "conv1d_as_conv2d", "split_separable", "is_plain_conv1d",
           "affine_as_depthwise", "dense_as_conv", "layer_norm_as_l2"]


@keras.saving.register_keras_serializable(package="kmot")
class ExpandAxis(keras.layers.Layer):
    """``ops.expand_dims(x, axis)`` as a layer (one EXPAND_DIMS op in LiteRT)."""

    def __init__(self, axis: int, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, x):
        return keras.ops.expand_dims(x, self.axis)

    def get_quantize_rule(self):
        from kmot.quantization.rules import QuantizeRule

        return QuantizeRule(output="keep")  # LiteRT's EXPAND_DIMS / SQUEEZE keep the scale

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


def _carry(source, new, moves: dict[str, tuple[str, tuple | None]], axis,
           int32_bias: bool = False) -> OptimizedLayer:
    """`new` wrapped with `source`'s chains moved onto it, then fake quantization
    (and the bias on its int32 grid with `int32_bias`)."""
    chains = {}
    if isinstance(source, OptimizedLayer):
        chains = {new_key: Carried(source, old_key, shape=shape)
                  for new_key, (old_key, shape) in moves.items()}
    wrapped = rewrap(new, chains)
    if not isinstance(wrapped, OptimizedLayer):
        wrapped = OptimizedLayer(new, {})
        wrapped.build_from_config({"layer": new.get_build_config()})
    wrapped.add_transform("kernel", FakeQuantTransform(axis=axis))
    if int32_bias and "bias" in moves:
        wrapped.add_transform("bias", BiasQuantTransform())
    return wrapped


def conv1d_as_conv2d(layer, int32_bias: bool = False) -> keras.Model:
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
    wrapped = _carry(layer, conv, moves, axis=-1, int32_bias=int32_bias)
    inputs = keras.Input((None, channels))
    out = SqueezeAxis(1, name=f"{inner.name}_squeeze")(
        wrapped(ExpandAxis(1, name=f"{inner.name}_expand")(inputs)))
    return PlacedModel(inputs, out, name=inner.name)


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
    input_shape = input_shape_of(inner)
    depthwise.build(input_shape)
    depthwise.kernel.assign(inner.depthwise_kernel.numpy())
    pointwise.build(depthwise.compute_output_shape(input_shape))
    pointwise.kernel.assign(inner.pointwise_kernel.numpy())
    point_moves = {"kernel": ("pointwise_kernel", None)}
    if cfg["use_bias"]:
        pointwise.bias.assign(inner.bias.numpy())
        point_moves["bias"] = ("bias", None)
    dw = _carry(layer, depthwise, {"kernel": ("depthwise_kernel", None)}, axis=DEPTHWISE)
    pw = _carry(layer, pointwise, point_moves, axis=-1, int32_bias=quantizer is not None)
    inputs = keras.Input(batch_shape=input_shape)
    h = dw(inputs)
    if quantizer is not None:
        h = quantizer(f"{inner.name}_depthwise")(h)
    return PlacedModel(inputs, pw(h), name=inner.name)


def input_shape_of(layer) -> tuple:
    return (None,) + tuple(_unwrap(layer).get_build_config()["input_shape"][1:])


def affine_as_depthwise(name: str, input_shape: tuple, scale, shift,
                        int32_bias: bool = False) -> keras.Model:
    """A per-channel ``x * scale + shift`` as the 1x1 DepthwiseConv2D LiteRT runs exactly.

    Per-channel int8 weights hold one value per channel, so the int8 kernel is
    exact; as MUL and ADD the constants would be quantized per tensor. Inputs of
    another rank than 4 are reshaped to (n, 1, channels) and back (RESHAPE ops).
    """
    channels = int(input_shape[-1])
    depthwise = keras.layers.DepthwiseConv2D(1, use_bias=True, name=f"{name}_depthwise")
    inputs = keras.Input(batch_shape=input_shape)
    flat = len(input_shape) != 4
    if flat:
        rows = 1
        for d in input_shape[1:-1]:
            rows *= int(d)
        h = keras.layers.Reshape((rows, 1, channels), name=f"{name}_to_4d")(inputs)
    else:
        h = inputs
    depthwise.build(h.shape)
    depthwise.kernel.assign(scale.reshape(1, 1, channels, 1).astype("float32"))
    depthwise.bias.assign(shift.astype("float32"))
    chains = {"kernel": [FakeQuantTransform(axis=DEPTHWISE)]}
    if int32_bias:
        chains["bias"] = [BiasQuantTransform()]
    h = OptimizedLayer(depthwise, chains)(h)
    if flat:
        h = keras.layers.Reshape(input_shape[1:], name=f"{name}_from_4d")(h)
    return PlacedModel(inputs, h, name=name)


def dense_as_conv(layer, int32_bias: bool = False) -> keras.Model:
    """A Dense on 3-D or 4-D inputs as the 1x1 Conv2D LiteRT runs in int8.

    The converter lowers such a Dense to RESHAPE, FULLY_CONNECTED, RESHAPE and a
    separate bias ADD, which stay float; a 1x1 convolution is one int8 CONV_2D,
    per output channel. 3-D inputs get EXPAND_DIMS / SQUEEZE around it.
    """
    inner = _unwrap(layer)
    cfg = inner.get_config()
    input_shape = input_shape_of(inner)
    units, channels = int(inner.kernel.shape[1]), int(input_shape[-1])
    conv = keras.layers.Conv2D(units, 1, activation=cfg["activation"], use_bias=cfg["use_bias"],
                               name=f"{inner.name}_1x1")
    conv.build((None, 1, 1, channels) if len(input_shape) == 3 else input_shape)
    conv.kernel.assign(inner.kernel.numpy()[None, None])
    moves = {"kernel": ("kernel", (channels, units))}
    if cfg["use_bias"]:
        conv.bias.assign(inner.bias.numpy())
        moves["bias"] = ("bias", None)
    wrapped = _carry(layer, conv, moves, axis=-1, int32_bias=int32_bias)
    inputs = keras.Input(batch_shape=input_shape)
    if len(input_shape) == 3:
        out = SqueezeAxis(1, name=f"{inner.name}_squeeze")(
            wrapped(ExpandAxis(1, name=f"{inner.name}_expand")(inputs)))
    else:
        out = wrapped(inputs)
    return PlacedModel(inputs, out, name=inner.name)


#: LiteRT's int8 L2_NORMALIZATION writes at a fixed scale of 1/128, zero point 0.
L2_NORMALIZED_RANGE = (-1.0, 127 / 128)


def layer_norm_as_l2(layer, quantizer) -> keras.Model:
    """A LayerNormalization over the last axis as int8 ops LiteRT has.

    ``(x - mean) / sqrt(var)`` is ``sqrt(C) * l2_normalize(x - mean)``: MEAN,
    SUB, then L2_NORMALIZATION (written as TensorFlow's l2_normalize, which the
    converter fuses into one op computing in high precision), then the scale
    ``gamma * sqrt(C)`` and offset ``beta`` as an exact 1x1 depthwise conv. A
    variance computed in int8 would lose small variances; L2_NORMALIZATION does
    not. What it drops is the layer's epsilon (negligible unless the variance is
    below it). `rms_scaling` skips the mean.

    Like any normalization, it magnifies the rounding of vectors that are almost
    constant (all-zero ReLU outputs, say): there LiteRT's MEAN, rounded its own
    way, and the simulation can differ by more than a step. After a linear layer
    (ConvNeXt, transformers) such vectors are rare.
    """
    from keras import ops

    inner = _unwrap(layer)
    input_shape = input_shape_of(inner)
    channels = int(input_shape[-1])
    inputs = keras.Input(batch_shape=input_shape)
    h = inputs
    if not inner.rms_scaling:
        mean = quantizer(f"{inner.name}_mean")(ops.mean(h, axis=-1, keepdims=True))
        # zero-centred: LiteRT's int8 L2_NORMALIZATION is wrong for other zero points
        h = quantizer(f"{inner.name}_centered", symmetric=True)(ops.subtract(h, mean))
    # Exactly tf.math.l2_normalize's ops, so that the converter fuses them.
    else:
        h = quantizer(f"{inner.name}_input", symmetric=True)(h)
    squares = ops.sum(ops.square(h), axis=-1, keepdims=True)
    h = ops.multiply(h, ops.rsqrt(ops.maximum(squares, 1e-12)))
    h = quantizer(f"{inner.name}_l2", L2_NORMALIZED_RANGE)(h)
    gamma = inner.gamma.numpy() if inner.scale else np.ones(channels, "float32")
    beta = inner.beta.numpy() if getattr(inner, "center", False) and inner.beta is not None \
        else np.zeros(channels, "float32")
    affine = affine_as_depthwise(f"{inner.name}_affine", input_shape, gamma * np.sqrt(channels), beta,
                                 int32_bias=True)
    return PlacedModel(inputs, affine(h), name=inner.name)
