"""`quantize_model`: quantization-aware training for Keras 3 models, int8 for LiteRT."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import tree

from kmot.core import OptimizedLayer, clone_layer, clone_model, is_graph_model
from kmot.core.wrapper import weight_key
from kmot.core.selection import LayerSelector, make_predicate, walk_layers
from kmot.errors import KmotError
from kmot.quantization.fold import fold_batch_norms
from kmot.quantization.quantizers import DEPTHWISE, ActivationQuantizer, FakeQuantTransform
from kmot.quantization.rules import FUSABLE_ACTIVATIONS, QuantizeRule, activation_of, fixed_range_of, rule_for

__all__ = ["quantize_model", "QuantizationError", "is_qat_model", "is_weight_qat_model", "SCHEMES"]

SCHEMES = ("int8", "int16x8")


class QuantizationError(KmotError, ValueError):
    """A model or option cannot be quantized as asked."""


def is_qat_model(model: keras.Model) -> bool:
    """True when `model` carries kmot activation quantizers (int8 QAT)."""
    return any(isinstance(layer, ActivationQuantizer) for layer in walk_layers(model))


def is_weight_qat_model(model: keras.Model) -> bool:
    """True when weights carry fake quantization but activations do not (int16x8)."""
    return not is_qat_model(model) and any(
        isinstance(t, FakeQuantTransform)
        for layer in walk_layers(model) if isinstance(layer, OptimizedLayer)
        for chain in layer.transforms.values() for t in chain)


def _functional(model: keras.Model) -> keras.Model:
    """A Functional copy of `model` (Sequential models, nested ones too, rebuilt)."""

    def convert(m):
        if isinstance(m, keras.Sequential):
            inputs = keras.Input(batch_shape=m.inputs[0].shape, dtype=m.inputs[0].dtype,
                                 name=m.inputs[0]._keras_history.operation.name)
            x = inputs
            for layer in m.layers:
                x = convert(layer)(x)
            return keras.Model(inputs, x, name=m.name)
        if is_graph_model(m):
            return clone_model(m, replace=lambda layer: None)
        return clone_layer(m)

    if isinstance(model, keras.Sequential):
        return convert(model)
    return keras.models.clone_model(
        model, clone_function=lambda layer: convert(layer) if isinstance(layer, keras.Sequential)
        else clone_layer(layer), recursive=True)


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


def _plan(model, layers, config, scheme):
    """Rules by layer name; names of layers left float; activations to split off."""
    selected = make_predicate(layers)
    rules: dict[str, QuantizeRule] = {}
    unsupported: list[str] = []
    for layer in walk_layers(model):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        choice = (config or {}).get(inner.name)
        if choice == "skip" or (choice is None and not selected(inner)):
            rules[inner.name] = QuantizeRule(output="float")
            continue
        rule = choice if isinstance(choice, QuantizeRule) else rule_for(inner)
        if rule is None:
            unsupported.append(f"{inner.name} ({type(inner).__name__})")
            rule = QuantizeRule(output="float")
        rules[inner.name] = rule
    split = {}
    for layer in walk_layers(model):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        act = activation_of(inner)
        if rules[inner.name].weights and act not in FUSABLE_ACTIVATIONS:
            split[inner.name] = act
    # An op followed only by a ReLU LiteRT fuses gets no quantizer of its own.
    fused = set()
    for layer in walk_layers(model):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        consumer = _single_consumer(layer)
        if (consumer is not None and rules[inner.name].output == "requantize"
                and inner.name not in split and not _is_plain_conv1d(inner)
                and rules.get(consumer.name, QuantizeRule()).output == "relu"):
            fused.add(inner.name)
    return rules, unsupported, split, fused


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
    if not is_graph_model(model):
        clone_model(model)  # raises kmot's UnsupportedModelError with the remedy
    if is_qat_model(model):
        raise QuantizationError(
            f"Model '{model.name}' is already quantization-aware. Expected a float, pruned "
            "or clustered model. Received: a model with ActivationQuantizer layers"
        )
    work = _functional(model)
    if fold_batch_norm:
        work = fold_batch_norms(work)
    rules, unsupported, split, fused = _plan(work, layers, config, scheme)
    if unsupported:
        message = (f"{len(unsupported)} layer(s) cannot be quantized and stay float: "
                   f"{', '.join(unsupported)}. Give them a QuantizeRule in `config=` (or "
                   "`get_quantize_rule()`), or export with allow_float_fallback=True.")
        if strict:
            raise QuantizationError(f"strict=True: {message} Received: strict=True")
        warnings.warn(message, stacklevel=2)
    preserve = _Preserve(preserve_sparsity, preserve_clusters)
    return _rewrite(work, rules, split, fused, quantize_activations=scheme == "int8",
                    preserve=preserve)


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


def _is_plain_conv1d(layer) -> bool:
    return isinstance(layer, keras.layers.Conv1D) and not isinstance(
        layer, (keras.layers.Conv1DTranspose, keras.layers.SeparableConv1D,
                keras.layers.DepthwiseConv1D))


def _conv1d_as_conv2d(layer):
    """A Conv1D as the 1 x k Conv2D LiteRT runs it as, with per-channel weights.

    Keras runs Conv1D on expand_dims(kernel), and the converter cannot carry a
    per-channel axis through that; a real Conv2D takes it directly. The file gets
    RESHAPE, CONV_2D, RESHAPE, as for a float Conv1D (EXPAND_DIMS, CONV_2D, RESHAPE).
    """
    cfg = layer.get_config()
    conv = keras.layers.Conv2D(
        cfg["filters"], (1, cfg["kernel_size"][0]), strides=(1, cfg["strides"][0]),
        padding=cfg["padding"], dilation_rate=(1, cfg["dilation_rate"][0]),
        groups=cfg.get("groups", 1), activation=cfg["activation"], use_bias=cfg["use_bias"],
        name=f"{layer.name}_2d")
    channels = int(layer.kernel.shape[1] * cfg.get("groups", 1))
    inputs = keras.Input((None, channels))
    out = SqueezeAxis(1, name=f"{layer.name}_squeeze")(
        conv(ExpandAxis(1, name=f"{layer.name}_expand")(inputs)))
    conv.kernel.assign(layer.kernel.numpy()[None])
    if cfg["use_bias"]:
        conv.bias.assign(layer.bias.numpy())
    return clone_model(keras.Model(inputs, out, name=layer.name), replace=lambda l: (
        OptimizedLayer(l, {"kernel": [FakeQuantTransform(axis=-1)]}) if l.name == conv.name else None))


def _split_separable(layer, quantizer):
    """A SeparableConv as the depthwise + 1x1 conv LiteRT runs, each quantized.

    Returned as a small nested model named like the layer; the tensor between the
    two convolutions gets its own activation quantizer (LiteRT requantizes there).
    """
    one_d = isinstance(layer, keras.layers.SeparableConv1D)
    cfg = layer.get_config()
    depthwise = (keras.layers.DepthwiseConv1D if one_d else keras.layers.DepthwiseConv2D)(
        kernel_size=cfg["kernel_size"], strides=cfg["strides"], padding=cfg["padding"],
        depth_multiplier=cfg["depth_multiplier"], dilation_rate=cfg["dilation_rate"],
        data_format=cfg["data_format"], use_bias=False, name=f"{layer.name}_depthwise")
    pointwise = (keras.layers.Conv1D if one_d else keras.layers.Conv2D)(
        cfg["filters"], 1, use_bias=cfg["use_bias"], activation=cfg["activation"],
        data_format=cfg["data_format"], name=f"{layer.name}_pointwise")
    inputs = keras.Input(batch_shape=layer.input.shape if layer._inbound_nodes else
                         (None,) + tuple(layer.get_build_config()["input_shape"][1:]))
    h = depthwise(inputs)
    depthwise.kernel.assign(layer.depthwise_kernel.numpy())
    if quantizer is not None:
        h = quantizer(f"{layer.name}_depthwise")(h)
    out = pointwise(h)
    pointwise.kernel.assign(layer.pointwise_kernel.numpy())
    if cfg["use_bias"]:
        pointwise.bias.assign(layer.bias.numpy())
    replaced = {depthwise.name: (depthwise, DEPTHWISE), pointwise.name: (pointwise, -1)}
    return clone_model(keras.Model(inputs, out, name=layer.name), replace=lambda l: (
        OptimizedLayer(l, {"kernel": [FakeQuantTransform(axis=replaced[l.name][1])]})
        if l.name in replaced else None))


#: The most distinct values a weight may have for `preserve_clusters` to keep them.
MAX_PRESERVED_CLUSTERS = 256


class _Preserve:
    """The transforms that keep a weight's zeros and clusters ahead of fake quant."""

    def __init__(self, sparsity: bool, clusters: bool):
        self.sparsity, self.clusters = sparsity, clusters

    def transforms(self, variable) -> list:
        from kmot.clustering import ClusterTransform
        from kmot.sparsity import KeepZerosTransform

        values = np.asarray(variable.numpy())
        zeros = bool(np.any(values == 0))
        distinct = np.unique(values)
        if self.clusters and distinct.size <= MAX_PRESERVED_CLUSTERS:
            # With as many clusters as distinct values, the centroids start exactly
            # on those values (whatever the init); a preserved zero is one of them.
            return [ClusterTransform(max(distinct.size, 2), init="linear",
                                     preserve_sparsity=self.sparsity and zeros)]
        if self.sparsity and zeros:
            return [KeepZerosTransform()]
        return []


def _rewrite(model, rules, split, fused, *, quantize_activations, preserve):
    top_inputs = {t.name for t in model.inputs}
    input_quantizers: dict[str, Any] = {}
    used: set[str] = {layer.name for layer in walk_layers(model)}

    def unique(name):
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        return candidate

    def quantizer(name, fixed=None):
        return ActivationQuantizer(fixed_range=fixed, name=unique(f"{name}_quant"))

    def replace(layer):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        rule = rules[inner.name]
        if not rule.weights:
            return None
        if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
            return _split_separable(layer, quantizer if quantize_activations else None)
        if _is_plain_conv1d(layer) and rule.weights.get("kernel") == -1:
            return _conv1d_as_conv2d(layer)
        if inner.name in split:
            inner.activation = keras.activations.get("linear")
        wrapper = layer if isinstance(layer, OptimizedLayer) else OptimizedLayer(layer, {})
        variables = {weight_key(inner, v): v for v in inner.weights}
        for key, axis in rule.weights.items():
            if key not in wrapper.transforms and key in variables:
                for transform in preserve.transforms(variables[key]):
                    wrapper.add_transform(key, transform)
            wrapper.add_transform(key, FakeQuantTransform(num_bits=8, axis=axis))
        return wrapper

    def quantize_input(t):
        history = getattr(t, "_keras_history", None)
        if (history is None or not isinstance(history.operation, keras.layers.InputLayer)
                or t.name not in top_inputs or "float" not in str(t.dtype)):
            return t
        if t.name not in input_quantizers:
            input_quantizers[t.name] = quantizer(history.operation.name)(t)
        return input_quantizers[t.name]

    def call_function(layer, *args, **kwargs):
        if quantize_activations:
            args = tree.map_structure(quantize_input, args)
        out = layer(*args, **kwargs)
        if not quantize_activations:
            return out
        name = layer.layer.name if isinstance(layer, OptimizedLayer) else layer.name
        rule = rules.get(name, QuantizeRule(output="float"))
        if name in split:
            act = split[name]
            out = tree.map_structure(lambda t: quantizer(name)(t), out)
            out = keras.layers.Activation(act, name=unique(f"{name}_{act}"))(out)
            return tree.map_structure(lambda t: quantizer(f"{name}_{act}", fixed_range_of(act))(t), out)
        if (isinstance(layer, keras.layers.Rescaling) and rule.output == "requantize"
                and np.any(np.asarray(layer.offset) != 0)):
            # LiteRT runs it as MUL then ADD: the tensor between needs its own range.
            mul = keras.layers.Rescaling(layer.scale, name=unique(f"{name}_scale"))
            add = keras.layers.Rescaling(1.0, layer.offset, name=unique(f"{name}_offset"))
            out = quantizer(f"{name}_scale")(mul(*args, **kwargs))
            return quantizer(name)(add(out))
        if rule.output == "keep" or name in fused:
            return out
        fixed = rule.fixed_range if rule.output == "fixed" else None
        return tree.map_structure(lambda t: quantizer(name, fixed)(t), out)

    return clone_model(model, replace=replace, call_function=call_function)
