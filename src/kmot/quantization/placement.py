"""Placing fake quantizers: the rewrite that turns a float model into a QAT one.

Weights get their fake quantization (per the rules of `plan.py`), layers LiteRT
runs as other ops are rewritten as those ops (`splits.py`), and activation
quantizers follow every tensor LiteRT writes at a new scale.
"""

from __future__ import annotations

import json

from typing import Any

import keras
import numpy as np
from keras import tree

from kmot.core import OptimizedLayer, clone_model
from kmot.core.nested import producer
from kmot.core.selection import walk_operations
from kmot.quantization.affine import channel_affine
from kmot.quantization.attention import is_quantizable_attention, quantized_attention
from kmot.quantization.bias import BiasQuantTransform
from kmot.quantization.plan import (SIGMOID_GATED, dense_on_feature_maps, is_concatenation,
                                   is_layer_norm, name_of)
from kmot.quantization.quantizers import ActivationQuantizer, FakeQuantTransform
from kmot.quantization.recurrent import is_quantizable_recurrent, quantized_recurrent
from kmot.quantization.rules import QuantizeRule, activation_of, fixed_range_of, input_rank, rule_for
from kmot.quantization.splits import (affine_as_depthwise, conv1d_as_conv2d, dense_as_conv,
                                      input_shape_of, is_plain_conv1d, layer_norm_as_l2,
                                      split_separable)

__all__ = ["place_quantizers"]


def upstream_quantizer(tensor) -> ActivationQuantizer | None:
    """The activation quantizer whose grid `tensor` is on: the one that wrote it, or
    the last one before ops that keep their input's scale (max pooling, reshape)."""
    seen = 0
    while tensor is not None and seen < 64:
        op, inputs = producer(tensor) or (None, [])
        if isinstance(op, ActivationQuantizer):
            return op
        rule = rule_for(op) if op is not None and not isinstance(op, keras.layers.InputLayer) else None
        if rule is None or rule.output != "keep" or not inputs:
            return None
        tensor = inputs[0] if len(inputs) == 1 else None
        seen += 1
    return None


#: The layers LiteRT runs as one op adding an int32 bias in steps of input scale
#: times kernel scale (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV).
_INT32_BIAS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
               keras.layers.Dense, keras.layers.Conv2DTranspose)


def _int32_bias(layer) -> bool:
    return isinstance(layer, _INT32_BIAS) and bool(getattr(layer, "use_bias", False))


def _float_producer(tensor, rules) -> bool:
    """Whether `tensor` comes (through grid-keeping ops) from a layer left float, so a
    quantized consumer needs a quantizer at its input: the float-to-int8 boundary of
    selective QAT."""
    seen = 0
    while tensor is not None and seen < 64:
        history = getattr(tensor, "_keras_history", None)
        op = history.operation if history else None
        if op is None or isinstance(op, (ActivationQuantizer, keras.layers.InputLayer)):
            return False
        rule = rules.get(name_of(op))
        if rule is None:
            return False
        if rule.output == "float":
            return True
        if rule.output != "keep" or not op._inbound_nodes:
            return False
        inputs = op._inbound_nodes[history.node_index].input_tensors
        tensor = inputs[0] if len(inputs) == 1 else None
        seen += 1
    return False


def _onto_one_grid(tensors: list) -> list:
    """A Concatenate's inputs, as LiteRT's int8 CONCATENATION sees them.

    It runs its inputs and output at one scale. The producers that feed only it
    have no quantizer (the converter writes them at that scale); when an input is
    on a grid of its own (a model input, a tensor other layers read too), the
    converter takes that grid for the whole op, clips the other inputs to it and
    requantizes the output after. The simulation does the same: the other inputs
    go onto that input's grid. (With no such input, the output's quantizer is
    the scale, as before.)
    """
    grids = [upstream_quantizer(t) if "float" in str(t.dtype) else None for t in tensors]
    owners = {id(q): q for q in grids if q is not None}
    if len(owners) != 1:
        return tensors
    (grid,) = owners.values()
    return [grid(t, observe=False) if q is None and "float" in str(t.dtype) else t
            for t, q in zip(tensors, grids)]


def _on_its_grid(tensor):
    """The input of an op that writes at its input's scale (AVERAGE_POOL_2D), on its
    grid explicitly when it reaches it through ops that keep a scale (a max pool).

    Without it, where that max pool's output also feeds other layers (InceptionV3's
    first mixed block: three 1x1 convs and an average pool), the converter takes
    the average pool's output range back onto the max pool's output for that use
    only, and runs the other consumers in float. The quantizer is the upstream
    one, not observing: on values already on its grid it changes nothing.
    """
    if not keras.utils.is_keras_tensor(tensor) or "float" not in str(tensor.dtype):
        return tensor
    history = getattr(tensor, "_keras_history", None)
    if history is None or isinstance(history.operation, ActivationQuantizer):
        return tensor
    upstream = upstream_quantizer(tensor)
    return tensor if upstream is None else upstream(tensor, observe=False)


def place_quantizers(model, rules, split, fused, *, quantize_activations):
    top_inputs = {t.name for t in model.inputs}
    input_quantizers: dict[str, Any] = {}
    used: set[str] = {op.name for op in walk_operations(model)}

    def unique(name):
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        return candidate

    def quantizer(name, fixed=None, symmetric=False):
        return ActivationQuantizer(fixed_range=fixed, symmetric=symmetric,
                                   name=unique(f"{name}_quant"))

    def quantized(name, fixed=None):
        """Puts a quantizer after each float tensor (integer outputs pass)."""
        return lambda t: quantizer(name, fixed)(t) if "float" in str(t.dtype) else t

    relu_quantizers: dict[tuple, Any] = {}

    def shared_relu_quantizer(layer, name, source):
        """One quantizer for every ReLU of the same tensor (NASNet applies up to five):
        TF merges identical ReLUs into one op, which takes one output scale."""
        config = layer.get_config() if hasattr(layer, "get_config") else {}
        signature = json.dumps({k: v for k, v in config.items() if k != "name"},
                               sort_keys=True, default=str)
        key = (id(source), type(layer).__name__, signature)
        if key not in relu_quantizers:
            relu_quantizers[key] = quantizer(name)
        return relu_quantizers[key]

    def replace(layer):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        rule = rules[inner.name]
        if rule.output != "float" and not rule.weights and inner.built:
            if is_layer_norm(inner):
                # as int8 ops, with the activation quantizers they need; int16x8
                # keeps the layer (its 16-bit activations come from calibration)
                return layer_norm_as_l2(layer, quantizer) if quantize_activations else None
            affine = channel_affine(inner, input_rank(inner))
            if affine is not None:
                return affine_as_depthwise(inner.name, input_shape_of(inner), *affine,
                                           int32_bias=quantize_activations)
        if not rule.weights:
            return None
        if quantize_activations and is_quantizable_attention(inner):
            return quantized_attention(layer)
        if quantize_activations and is_quantizable_recurrent(inner):
            return quantized_recurrent(layer)
        if inner.name in split:
            inner.activation = keras.activations.get("linear")
        if isinstance(inner, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
            return split_separable(layer, quantizer if quantize_activations else None)
        if is_plain_conv1d(inner) and rule.weights.get("kernel") == -1:
            return conv1d_as_conv2d(layer, int32_bias=quantize_activations)
        if dense_on_feature_maps(inner) and set(rule.weights) == {"kernel"}:
            return dense_as_conv(layer, int32_bias=quantize_activations)
        wrapper = layer if isinstance(layer, OptimizedLayer) else OptimizedLayer(layer, {})
        for key, axis in rule.weights.items():
            wrapper.add_transform(key, FakeQuantTransform(num_bits=8, axis=axis))
        if quantize_activations and "kernel" in rule.weights and _int32_bias(inner):
            wrapper.add_transform("bias", BiasQuantTransform())
        return wrapper

    def activate(name, act, t, own=None):
        """`act` applied to quantized `t`, quantized as LiteRT computes it."""
        if "float" not in str(t.dtype):
            return t
        if act in SIGMOID_GATED:
            # LiteRT runs silu as LOGISTIC, written at its fixed scale of 1/256, then MUL:
            # without the quantizer between, each layer's output is a few steps off.
            gate = keras.layers.Activation("sigmoid", name=unique(f"{name}_sigmoid"))(t)
            gate = quantizer(f"{name}_sigmoid", fixed_range_of("sigmoid"))(gate)
            return quantizer(name if own is not None else f"{name}_{act}")(
                keras.layers.Multiply(name=unique(f"{name}_gated"))([t, gate]))
        out = keras.layers.Activation(act, name=unique(f"{name}_{act}"))(t)
        return quantizer(f"{name}_{act}", fixed_range_of(act))(out)

    def quantize_input(t):
        history = getattr(t, "_keras_history", None)
        if (history is None or not isinstance(history.operation, keras.layers.InputLayer)
                or t.name not in top_inputs or "float" not in str(t.dtype)):
            return t
        if t.name not in input_quantizers:
            input_quantizers[t.name] = quantizer(history.operation.name)(t)
        return input_quantizers[t.name]

    boundary: dict[int, Any] = {}

    def enter_grid(t):
        """A float tensor from a float layer, quantized once for its quantized consumers."""
        if not keras.utils.is_keras_tensor(t) or "float" not in str(t.dtype) \
                or not _float_producer(t, rules):
            return t
        if id(t) not in boundary:
            producer = name_of(t._keras_history.operation)
            boundary[id(t)] = quantizer(f"{producer}_boundary")(t)
        return boundary[id(t)]

    def call_function(layer, *args, **kwargs):
        if not quantize_activations:
            return layer(*args, **kwargs)
        name = name_of(layer)
        rule = rules.get(name, QuantizeRule(output="float"))
        if rule.output == "float":  # stays float: nothing quantized in or out
            return layer(*args, **kwargs)
        args = tree.map_structure(quantize_input, args)
        if rule.output != "keep":
            args = tree.map_structure(enter_grid, args)
        if (isinstance(layer, keras.layers.Activation) and rule.output != "float"
                and activation_of(layer) in SIGMOID_GATED):
            return tree.map_structure(lambda t: activate(name, activation_of(layer), t, own=layer),
                                      args[0])
        if is_concatenation(layer) and rule.output == "requantize" and args \
                and isinstance(args[0], (list, tuple)):
            args = (_onto_one_grid(list(args[0])), *args[1:])
        if rule.output == "same" and args:
            args = (_on_its_grid(args[0]), *args[1:])
        out = layer(*args, **kwargs)
        if name in split:
            act = split[name]
            out = tree.map_structure(quantized(name), out)
            return tree.map_structure(lambda t: activate(name, act, t), out)
        if (isinstance(layer, keras.layers.Rescaling) and rule.output == "requantize"
                and np.any(np.asarray(layer.offset) != 0)):
            # LiteRT runs it as MUL then ADD: the tensor between needs its own range.
            mul = keras.layers.Rescaling(layer.scale, name=unique(f"{name}_scale"))
            add = keras.layers.Rescaling(1.0, layer.offset, name=unique(f"{name}_offset"))
            out = quantizer(f"{name}_scale")(mul(*args, **kwargs))
            return quantizer(name)(add(out))
        if rule.output == "keep" or name in fused:
            return out
        if (rule.output == "relu" and len(args) == 1 and not isinstance(args[0], (list, tuple))
                and "float" in str(out.dtype)):
            return shared_relu_quantizer(layer, name, args[0])(out)
        if rule.output == "same":
            upstream = upstream_quantizer(args[0])
            if upstream is not None:  # its range, not updated by this second use
                return tree.map_structure(lambda t: upstream(t, observe=False), out)
        fixed = rule.fixed_range if rule.output == "fixed" else None
        return tree.map_structure(quantized(name, fixed), out)

    return clone_model(model, replace=replace, call_function=call_function)
