"""How each layer is quantized for LiteRT's int8 kernels: weights, output, fusion.

A rule says which weights get fake quantization (and on which axis) and what
happens to the layer's output:

* ``"requantize"``: LiteRT writes a new scale: an `ActivationQuantizer` follows;
* ``"keep"``: the op keeps its input's scale (pooling max, reshape, padding...):
  nothing follows;
* ``"fixed"``: LiteRT's kernel has a fixed output scale (softmax, sigmoid, tanh);
* ``"relu"``: an activation LiteRT fuses into the op before it when that op has
  no other consumer: then the quantizer follows the activation, not the op.

Custom layers opt in with ``get_quantize_rule() -> QuantizeRule``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from kmot.quantization.quantizers import DEPTHWISE

__all__ = ["QuantizeRule", "rule_for", "FUSABLE_ACTIVATIONS", "fixed_range_of"]

FUSABLE_ACTIVATIONS = ("relu", "relu6", "linear")

# LiteRT's int8 kernels with a fixed output scale (and the matching float range).
_FIXED = {"softmax": (0.0, 255 / 256), "sigmoid": (0.0, 255 / 256), "tanh": (-1.0, 127 / 128)}


@dataclass(frozen=True)
class QuantizeRule:
    """How one layer is quantized.

    Args:
        weights: weight key -> per-channel axis (None: per-tensor; `DEPTHWISE`).
        output: ``"requantize"``, ``"keep"``, ``"fixed"``, ``"relu"`` or
            ``"float"`` (the layer stays float).
        fixed_range: the range for ``output="fixed"``.
    """

    weights: dict[str, int | str | None] = field(default_factory=dict)
    output: str = "requantize"
    fixed_range: tuple[float, float] | None = None


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else "linear"


def fixed_range_of(activation: str) -> tuple[float, float] | None:
    return _FIXED.get(activation)


def _activation_rule(name: str) -> QuantizeRule:
    if name in ("relu", "relu6"):
        return QuantizeRule(output="relu")
    if name in _FIXED:
        return QuantizeRule(output="fixed", fixed_range=_FIXED[name])
    if name == "linear":
        return QuantizeRule(output="keep")
    return QuantizeRule(output="requantize")


_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_KEEP = (
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
    keras.layers.Reshape, keras.layers.Flatten, keras.layers.Permute,
    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
    keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D,
    keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.Identity,
    keras.layers.RepeatVector, keras.layers.ActivityRegularization,
)
_REQUANTIZE = (
    keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
    keras.layers.Maximum, keras.layers.Minimum, keras.layers.Concatenate,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D, keras.layers.Rescaling, keras.layers.BatchNormalization,
    keras.layers.PReLU, keras.layers.LeakyReLU,
)


def rule_for(layer: keras.layers.Layer) -> QuantizeRule | None:
    """The int8 rule of `layer`, or None when kmot does not know how to quantize it."""
    custom = getattr(layer, "get_quantize_rule", None)
    if callable(custom):
        return custom()
    if isinstance(layer, _TRANSPOSE):  # (before _CONV: Conv2DTranspose is a Conv2D)
        # Per-tensor: the converter rejects per-channel fake quant on their
        # output-channel axis ("tfl.transpose op has mismatched quantized axes").
        return QuantizeRule(weights={"kernel": None})
    if isinstance(layer, keras.layers.Conv1D):
        if layer.padding == "causal" or layer.data_format != "channels_last":
            # Keras runs Conv1D on expand_dims(kernel): the converter cannot carry a
            # per-channel axis through that ("mismatched quantized axes"), so
            # per-tensor, unless it is rewritten as a 1 x k Conv2D (quantize.py).
            return QuantizeRule(weights={"kernel": None})
        return QuantizeRule(weights={"kernel": -1})
    if isinstance(layer, _CONV):
        return QuantizeRule(weights={"kernel": -1})
    if isinstance(layer, _DEPTHWISE):
        return QuantizeRule(weights={"kernel": DEPTHWISE})
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        # Split into depthwise + quantizer + 1x1 conv when quantized (see quantize.py).
        return QuantizeRule(weights={"depthwise_kernel": DEPTHWISE, "pointwise_kernel": -1})
    if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
        # Per-tensor: per-channel Dense breaks conversion (mismatched quantized axes).
        return QuantizeRule(weights={"kernel": None})
    from kmot.quantization.fold import FoldedBatchNorm

    if isinstance(layer, (_KEEP, FoldedBatchNorm)):
        return QuantizeRule(output="keep")
    if isinstance(layer, _REQUANTIZE):
        return QuantizeRule()
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.negative_slope == 0 and layer.threshold == 0 and layer.max_value in (None, 6, 6.0)
        return QuantizeRule(output="relu") if plain else QuantizeRule()
    if isinstance(layer, keras.layers.Softmax):
        return QuantizeRule(output="fixed", fixed_range=_FIXED["softmax"])
    if isinstance(layer, keras.layers.Activation):
        return _activation_rule(_activation_name(layer))
    return None


def activation_of(layer: keras.layers.Layer) -> str:
    """The name of a layer's built-in activation ("linear" when none)."""
    return _activation_name(layer)
