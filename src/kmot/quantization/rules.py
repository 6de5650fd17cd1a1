"""How each layer and operation is quantized for LiteRT's int8 kernels.

A rule says which weights get fake quantization (and on which axis) and what
happens to the output:

* ``"requantize"``: LiteRT writes a new scale: an `ActivationQuantizer` follows;
* ``"keep"``: the op keeps its input's scale (pooling max, reshape, padding...):
  nothing follows;
* ``"fixed"``: LiteRT's kernel has a fixed output scale (softmax, sigmoid, tanh);
* ``"relu"``: an activation LiteRT fuses into the op before it when that op has
  no other consumer: then the quantizer follows the activation, not the op;
* ``"same"``: LiteRT's int8 kernel writes at its input's scale (AVERAGE_POOL_2D
  must): the output is rounded on the input's grid, with the input's range.

Rules cover layers and the operation nodes ``keras.ops`` leaves in a Functional
graph (``x + 3``, ``ops.relu6``, ``x * y``). Custom layers opt in with
``get_quantize_rule() -> QuantizeRule``. Per-channel weight axes come from the
kernel table (`kmot.core.kernels`); which layers may be per channel at all is
the converter's business and lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras

from kmot.core import kernels
from kmot.quantization.affine import channel_affine
from kmot.quantization.quantizers import DEPTHWISE

__all__ = ["QuantizeRule", "rule_for", "FUSABLE_ACTIVATIONS", "fixed_range_of", "op_rule",
           "input_rank", "layer_norm_over_last_axis"]

FUSABLE_ACTIVATIONS = ("relu", "relu6", "linear")

# LiteRT's int8 kernels with a fixed output scale (and the matching float range).
_FIXED = {"softmax": (0.0, 255 / 256), "sigmoid": (0.0, 255 / 256), "tanh": (-1.0, 127 / 128)}


@dataclass(frozen=True)
class QuantizeRule:
    """How one layer is quantized.

    Args:
        weights: weight key -> per-channel axis (None: per-tensor; `DEPTHWISE`).
        output: ``"requantize"``, ``"keep"``, ``"fixed"``, ``"relu"``, ``"same"``
            or ``"float"`` (the layer stays float).
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


L = keras.layers
# Per tensor: the converter rejects a per-channel axis on these ("tfl.transpose op
# has mismatched quantized axes"): Dense and EinsumDense kernels are transposed for
# FULLY_CONNECTED, transposed convolutions for TRANSPOSE_CONV.
_PER_TENSOR = (L.Dense, L.EinsumDense, L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
# Per output channel (the kernel table's output axes).
_PER_CHANNEL = (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D,
                L.SeparableConv1D, L.SeparableConv2D)
_KEEP = (
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.Reshape, L.Flatten, L.Permute,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
    L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.Identity,
    L.RepeatVector, L.ActivityRegularization,
)
_REQUANTIZE = (
    L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum, L.Concatenate,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.Rescaling, L.PReLU, L.LeakyReLU,
)
# The converter requires these to keep their input's scale ("quantization parameters
# violate the same scale constraint"), yet they compute values off its grid.
_SAME_SCALE = (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D)
del L


def input_rank(layer: keras.layers.Layer) -> int:
    """The rank of a built layer's (first) input, batch included."""
    if layer._inbound_nodes:
        first = layer._inbound_nodes[0].input_tensors
        if first:
            return len(first[0].shape)
    shape = (layer.get_build_config() or {}).get("input_shape")
    if shape and isinstance(shape[0], (list, tuple)):
        shape = shape[0]
    return len(shape) if shape else 0


def layer_norm_over_last_axis(layer) -> bool:
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = input_rank(layer)
    return rank > 0 and len(axes) == 1 and axes[0] % rank == rank - 1


def _axis(layout_axes: tuple[int, ...]) -> int | str:
    return DEPTHWISE if tuple(layout_axes) == (-2, -1) else layout_axes[0]


def _weights_rule(layer) -> dict[str, int | str | None]:
    found = kernels(layer)
    if isinstance(layer, _PER_TENSOR) or (
            isinstance(layer, keras.layers.Conv1D)
            and (layer.padding == "causal" or layer.data_format != "channels_last")):
        # Keras runs a causal or channels-first Conv1D on expand_dims(kernel): the
        # converter cannot carry a per-channel axis through that, unless it is
        # rewritten as a 1 x k Conv2D (quantize.py does so for the others).
        return {k.key: None for k in found}
    return {k.key: _axis(k.layout.out_axes) for k in found}


def rule_for(layer: keras.layers.Layer) -> QuantizeRule | None:
    """The int8 rule of `layer`, or None when kmot does not know how to quantize it."""
    custom = getattr(layer, "get_quantize_rule", None)
    if callable(custom):
        return custom()
    if not isinstance(layer, keras.layers.Layer):
        return op_rule(layer)
    if isinstance(layer, _PER_TENSOR + _PER_CHANNEL):
        # SeparableConv is split into depthwise + quantizer + 1x1 conv (quantize.py).
        return QuantizeRule(weights=_weights_rule(layer))
    if isinstance(layer, keras.layers.MultiHeadAttention):
        from kmot.quantization.attention import (
            attention_kernels,
            is_quantizable_attention,
        )

        # per tensor, rewritten with its inner quantizers (attention.py)
        return (QuantizeRule(weights=dict.fromkeys(attention_kernels(layer)))
                if is_quantizable_attention(layer) else None)
    if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU, keras.layers.Bidirectional)):
        from kmot.quantization.recurrent import is_quantizable_recurrent, recurrent_kernels

        # its step's quantizers are inside, the last one is the output's (recurrent.py)
        return (QuantizeRule(weights=dict.fromkeys(recurrent_kernels(layer)), output="keep")
                if is_quantizable_recurrent(layer) else None)
    if isinstance(layer, keras.layers.Embedding):
        # GATHER writes at the table's scale: per-tensor weights, no new scale
        return QuantizeRule(weights={"embeddings": None}, output="keep")
    from kmot.quantization.fold import FoldedBatchNorm

    if isinstance(layer, (_KEEP, FoldedBatchNorm)):
        return QuantizeRule(output="keep")
    if isinstance(layer, _REQUANTIZE):
        return QuantizeRule()
    if isinstance(layer, _SAME_SCALE):
        return QuantizeRule(output="same")
    if isinstance(layer, keras.layers.LayerNormalization):
        # int8 as MEAN, SUB, L2_NORMALIZATION and a 1x1 depthwise conv (splits.py)
        return QuantizeRule() if layer.built and layer_norm_over_last_axis(layer) else None
    if layer.built and channel_affine(layer, input_rank(layer)) is not None:
        # BatchNormalization, Normalization, LayerScale: int8 as a 1x1 depthwise conv
        return QuantizeRule()
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.negative_slope == 0 and layer.threshold == 0 and layer.max_value in (None, 6, 6.0)
        return QuantizeRule(output="relu") if plain else QuantizeRule()
    if isinstance(layer, keras.layers.Softmax):
        return QuantizeRule(output="fixed", fixed_range=_FIXED["softmax"])
    if isinstance(layer, keras.layers.Activation):
        return _activation_rule(_activation_name(layer))
    return None


# keras.ops nodes, by class name (their classes live in keras.src.ops).
_OP_OUTPUT = {
    **dict.fromkeys(("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Mean",
                     "Concatenate", "Average", "Maximum", "Minimum", "Square", "HardSilu",
                     "Silu", "Gelu", "Elu", "LeakyRelu", "HardSigmoid"), "requantize"),
    "AveragePool": "same",
    **dict.fromkeys(("Reshape", "Transpose", "ExpandDims", "Squeeze", "GetItem", "Slice",
                     "Moveaxis", "Ravel", "Max", "Amax", "Copy", "Identity", "Repeat",
                     "Tile", "BroadcastTo", "Pad", "MaxPool", "Flip", "Swapaxes",
                     "StopGradient", "Cast"), "keep"),
    "Relu": "relu", "Relu6": "relu",
}
_OP_FIXED = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax"}


def op_rule(op: Any) -> QuantizeRule | None:
    """The int8 rule of a ``keras.ops`` operation node, or None when unknown."""
    module = type(op).__module__
    if not module.startswith("keras."):
        return None
    name = type(op).__name__
    if name in _OP_FIXED:
        return QuantizeRule(output="fixed", fixed_range=_FIXED[_OP_FIXED[name]])
    output = _OP_OUTPUT.get(name)
    return QuantizeRule(output=output) if output else None


def activation_of(layer: keras.layers.Layer) -> str:
    """The name of a layer's built-in activation ("linear" when none)."""
    return _activation_name(layer)
