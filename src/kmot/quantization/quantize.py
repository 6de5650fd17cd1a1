"""`quantize_model`: quantization-aware training for Keras 3 models, int8 for LiteRT."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import tree

from kmot.core import OptimizedLayer, as_functional, clone_model, kernels, simulations
from kmot.core.constraints import KeepZerosTransform, SharedValuesTransform
from kmot.core.selection import LayerSelector, make_predicate, walk_layers, walk_operations
from kmot.errors import KmotError
from kmot.quantization.fold import fold_batch_norms
from kmot.quantization.quantizers import ActivationQuantizer, FakeQuantTransform
from kmot.quantization.rules import (FUSABLE_ACTIVATIONS, QuantizeRule, activation_of, fixed_range_of,
                                     input_rank, layer_norm_over_last_axis, rule_for)
from kmot.quantization.affine import channel_affine
from kmot.quantization.splits import (affine_as_depthwise, conv1d_as_conv2d,
                                      dense_as_conv, input_shape_of, is_plain_conv1d, layer_norm_as_l2,
                                      split_separable)

__all__ = ["quantize_model", "QuantizationError", "is_qat_model", "is_weight_qat_model", "SCHEMES"]

SCHEMES = ("int8", "int16x8")


class QuantizationError(KmotError, ValueError):
    """A model or option cannot be quantized as asked."""


def is_qat_model(model: keras.Model) -> bool:
    """True when `model` carries kmot activation quantizers (int8 QAT)."""
    return "activations" in simulations(model)


def is_weight_qat_model(model: keras.Model) -> bool:
    """True when weights carry fake quantization but activations do not (int16x8)."""
    return simulations(model) == {"weights"}


def _name(op) -> str:
    return op.layer.name if isinstance(op, OptimizedLayer) else op.name


def _single_consumer(layer) -> keras.layers.Layer | None:
    """The one layer consuming `layer`'s output, looking through folded BNs."""
    from kmot.quantization.fold import FoldedBatchNorm

    nodes = layer._outbound_nodes
    if len(nodes) != 1 or len(layer._inbound_nodes) != 1:
        return None
    consumer = nodes[0].operation
    if isinstance(consumer, FoldedBatchNorm):
        return _single_consumer(consumer)
    return consumer


def _plan(model, layers, config):
    """Rules by layer / operation name; what stays float; activations to split off."""
    selected = make_predicate(layers)
    rules: dict[str, QuantizeRule] = {}
    unsupported: list[str] = []
    for op in walk_operations(model):
        inner = op.layer if isinstance(op, OptimizedLayer) else op
        choice = (config or {}).get(inner.name)
        is_layer = isinstance(inner, keras.layers.Layer)
        if choice == "skip" or (choice is None and is_layer and not selected(inner)):
            rules[inner.name] = QuantizeRule(output="float")
            continue
        rule = choice if isinstance(choice, QuantizeRule) else rule_for(inner)
        if rule is None:
            kind = type(inner).__name__ if is_layer else f"keras.ops.{type(inner).__name__}"
            unsupported.append(f"{inner.name} ({kind})")
            rule = QuantizeRule(output="float")
        rules[inner.name] = rule
    split = {}
    for layer in walk_layers(model):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        act = activation_of(inner)
        if rules[inner.name].weights and act not in FUSABLE_ACTIVATIONS:
            split[inner.name] = act
    # An op followed only by a ReLU LiteRT fuses gets no quantizer of its own; nor
    # does one feeding only a Concatenate: the converter writes it at the
    # concatenation's scale directly (a quantizer there would be a second rounding).
    fused = set()
    for op in walk_operations(model):
        consumer = _single_consumer(op)
        name = _name(op)
        if consumer is None or rules[name].output != "requantize" or name in split:
            continue
        consumer_rule = rules.get(_name(consumer), QuantizeRule())
        if consumer_rule.output == "relu" and not _ends_in_reshape(getattr(op, "layer", op)):
            fused.add(name)
        elif _is_concatenation(consumer) and consumer_rule.output == "requantize":
            fused.add(name)
    return rules, unsupported, split, fused


def _upstream_quantizer(tensor) -> ActivationQuantizer | None:
    """The activation quantizer whose grid `tensor` is on: the one that wrote it, or
    the last one before ops that keep their input's scale (max pooling, reshape)."""
    seen = 0
    while tensor is not None and seen < 64:
        history = getattr(tensor, "_keras_history", None)
        op = history.operation if history else None
        if isinstance(op, ActivationQuantizer):
            return op
        rule = rule_for(op) if op is not None and not isinstance(op, keras.layers.InputLayer) else None
        if rule is None or rule.output != "keep" or not op._inbound_nodes:
            return None
        inputs = op._inbound_nodes[history.node_index].input_tensors
        tensor = inputs[0] if len(inputs) == 1 else None
        seen += 1
    return None


def _is_concatenation(op) -> bool:
    return isinstance(op, keras.layers.Concatenate) or (
        not isinstance(op, keras.layers.Layer) and type(op).__name__ == "Concatenate")


#: Activations LiteRT runs as x * sigmoid(x) (LOGISTIC, then MUL).
_SIGMOID_GATED = ("silu", "swish")


def _is_layer_norm(layer) -> bool:
    return isinstance(layer, keras.layers.LayerNormalization) and layer_norm_over_last_axis(layer)


def _dense_on_feature_maps(layer) -> bool:
    return type(layer) is keras.layers.Dense and input_rank(layer) in (3, 4)


def _ends_in_reshape(layer) -> bool:
    """Rewritten (`splits.py`) into ops that end in a RESHAPE, which no ReLU fuses into."""
    if not isinstance(layer, keras.layers.Layer) or not layer.built:
        return False
    rank = input_rank(layer)
    return (is_plain_conv1d(layer) or (_dense_on_feature_maps(layer) and rank == 3)
            or (rank != 4 and (channel_affine(layer, rank) is not None or _is_layer_norm(layer))))


def _check_config(config):
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise QuantizationError(
            f"`config` maps layer names to 'skip' or a QuantizeRule. Received: {config!r}"
        )
    for name, value in config.items():
        if value != "skip" and not isinstance(value, QuantizeRule):
            raise QuantizationError(
                f"`config['{name}']` must be 'skip' or a kmot.quantization.QuantizeRule. "
                f"Received: {value!r}"
            )


def quantize_model(
    model: keras.Model,
    *,
    scheme: str = "int8",
    layers: LayerSelector = None,
    config: Mapping[str, Any] | None = None,
    strict: bool = False,
    fold_batch_norm: bool = True,
    preserve_sparsity: bool = False,
    preserve_clusters: bool = False,
) -> keras.Model:
    """Prepares a model for quantization-aware training (QAT) for LiteRT.

    Weights get symmetric narrow-range 8-bit fake quantization (per output
    channel for convolutions and depthwise convolutions, per tensor for Dense,
    EinsumDense and transposed convolutions); BatchNormalization folds into the
    convolution before it; activations get asymmetric quantizers with
    moving-average ranges where LiteRT writes a new scale (none between an op
    and a ReLU it fuses). Layers already pruned or clustered keep their
    transforms: fake quantization is appended to each weight's chain, so zeros
    and clusters reach the int8 file.

    Args:
        model: a Sequential or Functional model (nested models allowed).
        scheme: ``"int8"`` (int8 weights and activations, exported with no
            representative data) or ``"int16x8"`` (weights only; export with
            ``to_litert(..., quantize="int16x8", representative_data=...)``,
            which calibrates the 16-bit activations on the trained model).
        layers: which layers to quantize (default all); others stay float.
        config: per-layer control: ``{"name": "skip"}`` or a `QuantizeRule`.
        strict: raise instead of warning when a layer cannot be quantized.
        fold_batch_norm: fold BatchNormalization into the preceding layer.
        preserve_sparsity: weights that are exactly zero (a stripped pruned model)
            stay zero through training and into the int8 file (PQAT).
        preserve_clusters: a weight with at most `MAX_PRESERVED_CLUSTERS` distinct
            values (a stripped clustered model) keeps sharing them: its values
            become trainable centroids (CQAT; with `preserve_sparsity`, PCQAT).
            Wrappers still carrying pruning or clustering transforms keep them
            in any case.

    Returns:
        A new model to fine-tune, then export with `kmot.export.to_litert`.

    Raises:
        QuantizationError: unknown scheme or config, or (strict) a layer kmot
            cannot quantize.

    Example:
        >>> qat = quantize_model(model)                      # doctest: +SKIP
        >>> qat.compile(...); qat.fit(x, y, epochs=5)         # doctest: +SKIP
        >>> to_litert(qat, "model.tflite")                    # int8, no calibration
    """
    if scheme not in SCHEMES:
        raise QuantizationError(
            f"Expected scheme to be one of {list(SCHEMES)}. Received: scheme={scheme!r}"
        )
    _check_config(config)
    if is_qat_model(model):
        raise QuantizationError(
            f"Model '{model.name}' is already quantization-aware. Expected a float, pruned "
            "or clustered model. Received: a model with ActivationQuantizer layers"
        )
    work = as_functional(model)  # raises kmot's UnsupportedModelError with the remedy
    if preserve_sparsity or preserve_clusters:
        work = _preserved(work, sparsity=preserve_sparsity, clusters=preserve_clusters)
    if fold_batch_norm:
        work = fold_batch_norms(work)
    rules, unsupported, split, fused = _plan(work, layers, config)
    if unsupported:
        message = (f"{len(unsupported)} layer(s) cannot be quantized and stay float: "
                   f"{', '.join(unsupported)}. Give them a QuantizeRule in `config=` (or "
                   "`get_quantize_rule()`), or export with allow_float_fallback=True.")
        if strict:
            raise QuantizationError(f"strict=True: {message} Received: strict=True")
        warnings.warn(message, stacklevel=2)
    return _rewrite(work, rules, split, fused, quantize_activations=scheme == "int8")


#: The most distinct values a weight may have for `preserve_clusters` to keep them.
MAX_PRESERVED_CLUSTERS = 256


def _preserving(value: np.ndarray, sparsity: bool, clusters: bool) -> list:
    """The transforms that keep a plain weight's zeros and shared values."""
    zeros = bool(np.any(value == 0))
    distinct = np.unique(value).size
    if clusters and distinct <= MAX_PRESERVED_CLUSTERS:
        return [SharedValuesTransform(max(distinct, 2), keep_zeros=sparsity and zeros)]
    if sparsity and zeros:
        return [KeepZerosTransform()]
    return []


def _preserved(model, *, sparsity: bool, clusters: bool):
    """`model` with the zeros / shared values of its plain kernels held by transforms.

    Kernels that already carry transforms (a pruned or clustered model not yet
    stripped) keep their own chains: they say what to preserve better than values.
    """

    def replace(layer):
        wrapper = layer if isinstance(layer, OptimizedLayer) else None
        chains = wrapper.transforms if wrapper else {}
        added = {}
        for k in kernels(layer):
            if not chains.get(k.key):
                found = _preserving(np.asarray(k.variable.numpy()), sparsity, clusters)
                if found:
                    added[k.key] = found
        if not added:
            return None
        wrapper = wrapper or OptimizedLayer(layer, {})
        for key, found in added.items():
            for t in found:
                wrapper.add_transform(key, t)
        return wrapper

    return clone_model(model, replace=replace)


def _rewrite(model, rules, split, fused, *, quantize_activations):
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

    def replace(layer):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        rule = rules[inner.name]
        if rule.output != "float" and not rule.weights and inner.built:
            if _is_layer_norm(inner):
                return layer_norm_as_l2(layer, quantizer)
            affine = channel_affine(inner, input_rank(inner))
            if affine is not None:
                return affine_as_depthwise(inner.name, input_shape_of(inner), *affine)
        if not rule.weights:
            return None
        if inner.name in split:
            inner.activation = keras.activations.get("linear")
        if isinstance(inner, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
            return split_separable(layer, quantizer if quantize_activations else None)
        if is_plain_conv1d(inner) and rule.weights.get("kernel") == -1:
            return conv1d_as_conv2d(layer)
        if _dense_on_feature_maps(inner) and set(rule.weights) == {"kernel"}:
            return dense_as_conv(layer)
        wrapper = layer if isinstance(layer, OptimizedLayer) else OptimizedLayer(layer, {})
        for key, axis in rule.weights.items():
            wrapper.add_transform(key, FakeQuantTransform(num_bits=8, axis=axis))
        return wrapper

    def activate(name, act, t, own=None):
        """`act` applied to quantized `t`, quantized as LiteRT computes it."""
        if "float" not in str(t.dtype):
            return t
        if act in _SIGMOID_GATED:
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

    def call_function(layer, *args, **kwargs):
        if not quantize_activations:
            return layer(*args, **kwargs)
        args = tree.map_structure(quantize_input, args)
        name = _name(layer)
        rule = rules.get(name, QuantizeRule(output="float"))
        if (isinstance(layer, keras.layers.Activation) and rule.output != "float"
                and activation_of(layer) in _SIGMOID_GATED):
            return tree.map_structure(lambda t: activate(name, activation_of(layer), t, own=layer),
                                      args[0])
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
        if rule.output == "same":
            upstream = _upstream_quantizer(args[0])
            if upstream is not None:  # its range, not updated by this second use
                return tree.map_structure(lambda t: upstream(t, training=False), out)
        fixed = rule.fixed_range if rule.output == "fixed" else None
        return tree.map_structure(quantized(name, fixed), out)

    return clone_model(model, replace=replace, call_function=call_function)
