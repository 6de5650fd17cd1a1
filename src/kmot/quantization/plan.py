"""Where quantizers go: a rule for every layer and operation, activations to split off,
and the producers that need no quantizer of their own (fused into a ReLU, or written
at a Concatenate's scale)."""

from __future__ import annotations

import keras

from kmot.core import OptimizedLayer
from kmot.core.selection import make_predicate, walk_layers, walk_operations
from kmot.quantization.affine import channel_affine
from kmot.quantization.rules import (FUSABLE_ACTIVATIONS, QuantizeRule, activation_of, input_rank,
                                     layer_norm_over_last_axis, rule_for)
from kmot.quantization.splits import is_plain_conv1d

__all__ = ["plan", "name_of", "is_concatenation", "SIGMOID_GATED", "is_layer_norm", "dense_on_feature_maps"]


def name_of(op) -> str:
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


def plan(model, layers, config):
    """Rules by layer / operation name; what stays float; activations to split off."""
    selected = make_predicate(layers)
    rules: dict[str, QuantizeRule] = {}
    unsupported: list[str] = []
    for op in walk_operations(model):
        inner = op.layer if isinstance(op, OptimizedLayer) else op
        choice = (config or {}).get(inner.name)
        is_layer = isinstance(inner, keras.layers.Layer)
        if choice == "skip" or (choice is None and is_layer and not selected(inner)):
            natural = rule_for(inner) if choice is None else None
            # Ops that pass their input's grid on (pooling, reshape) stay transparent:
            # float in a float region, int8 between quantized layers, never a new scale.
            keeps = natural is not None and natural.output == "keep" and not natural.weights
            rules[inner.name] = natural if keeps else QuantizeRule(output="float")
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
        # (a "keep" rule quantizes its activations inside: a QuantizedLSTM's tanh)
        if rules[inner.name].weights and rules[inner.name].output != "keep" \
                and act not in FUSABLE_ACTIVATIONS:
            split[inner.name] = act
    # An op followed only by a ReLU LiteRT fuses gets no quantizer of its own; nor
    # does one feeding only a Concatenate: the converter writes it at the
    # concatenation's scale directly (a quantizer there would be a second rounding).
    fused = set()
    for op in walk_operations(model):
        consumer = _single_consumer(op)
        name = name_of(op)
        if consumer is None or rules[name].output != "requantize" or name in split:
            continue
        consumer_rule = rules.get(name_of(consumer), QuantizeRule())
        if consumer_rule.output == "relu" and not _ends_in_reshape(getattr(op, "layer", op)):
            fused.add(name)
        elif is_concatenation(consumer) and consumer_rule.output == "requantize":
            fused.add(name)
    return rules, unsupported, split, fused


def is_concatenation(op) -> bool:
    return isinstance(op, keras.layers.Concatenate) or (
        not isinstance(op, keras.layers.Layer) and type(op).__name__ == "Concatenate")


#: Activations LiteRT runs as x * sigmoid(x) (LOGISTIC, then MUL).
SIGMOID_GATED = ("silu", "swish")


def is_layer_norm(layer) -> bool:
    return isinstance(layer, keras.layers.LayerNormalization) and layer_norm_over_last_axis(layer)


def dense_on_feature_maps(layer) -> bool:
    return type(layer) is keras.layers.Dense and input_rank(layer) in (3, 4)


def _ends_in_reshape(layer) -> bool:
    """Rewritten (`splits.py`) into ops that end in a RESHAPE, which no ReLU fuses into."""
    if not isinstance(layer, keras.layers.Layer) or not layer.built:
        return False
    rank = input_rank(layer)
    return (is_plain_conv1d(layer) or (dense_on_feature_maps(layer) and rank == 3)
            or (rank != 4 and (channel_affine(layer, rank) is not None or is_layer_norm(layer))))
