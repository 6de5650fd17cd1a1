"""Structured (channel) pruning: fewer channels, so LiteRT runs smaller kernels.

Zeros do not make a dense kernel faster; removing whole channels does. The core's
channel graph (`kmot.core.channels`) says which channels go together (a conv's
outputs with the next BatchNormalization, depthwise conv and every consumer's
input rows; the branches of a residual Add; a squeeze-excite gate with the tensor
it gates); this module ranks the channels and removes the least important.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import keras
import numpy as np

from kmot.core.channels import ChannelGraph, ChannelGroup
from kmot.core.kernels import kernels
from kmot.core.selection import LayerSelector, make_predicate, walk_layers
from kmot.core.wrapper import OptimizedLayer
from kmot.errors import LayerSelectionError, TransformError, UnsupportedModelError

__all__ = ["channel_groups", "prune_channels", "IMPORTANCES"]

#: Built-in channel importance criteria (a callable is accepted too).
IMPORTANCES = ("l1", "l2", "bn", "taylor")
_ALLOCATIONS = ("uniform", "global")

Importance = Callable[[Sequence[np.ndarray]], float]


def channel_groups(model: keras.Model) -> list[ChannelGroup]:
    """The groups of channels `prune_channels` removes together, and why.

    Each group lists its producers and every weight axis its channels index
    (``layer/weight[axis]``), and whether it can be pruned (if not, the reason:
    it reaches a model output, or passes through an op that cannot be mapped).

    Example:
        >>> for group in channel_groups(model):
        ...     print(group)   # group 0: 32 channels of conv1, prunable: conv1/kernel[3], ...
    """
    _check_plain(model)
    return ChannelGraph(model).groups()


def prune_channels(
    model: keras.Model,
    *,
    sparsity: float = 0.5,
    importance: str | Importance = "l2",
    data: tuple | None = None,
    round_to: int = 1,
    layers: LayerSelector = None,
    allocation: str = "uniform",
    loss: Callable | None = None,
    target: str | None = None,
) -> keras.Model:
    """A new plain model with the least important channels physically removed.

    Args:
        model: a Functional or Sequential model (the input is untouched).
        sparsity: the fraction of each prunable group's channels to remove
            (``allocation="uniform"``), or of all prunable channels
            (``"global"``), in ``[0, 1)``.
        importance: ``"l1"`` / ``"l2"``: the norm of every kernel slice a channel
            indexes (its producers' output slices, its consumers' input rows);
            ``"bn"``: the absolute BatchNormalization scale (network slimming;
            groups without one use ``"l2"``, with a warning); ``"taylor"``: the
            first-order loss change of removing the channel, from ``data``; or
            ``fn(slices) -> float`` over the channel's kernel slices.
        data: ``(x, y)`` arrays for ``"taylor"`` (up to 512 samples are used).
        round_to: keep a multiple of this many channels per group (8 suits SIMD).
        layers: only groups whose producers are all selected are pruned.
        allocation: ``"uniform"`` or ``"global"`` (one ranking of importances
            normalized by their group's mean: crowded groups keep more).
        loss: for ``"taylor"``; default: the model's compiled loss.
        target: first check that this deployment target runs every op
            (`kmot.export.check`, e.g. ``"tflm"``); default: no check.

    Returns:
        A new model with the same inputs, outputs and layer names and fewer
        channels, uncompiled; fine-tune, quantize or export it like any other.

    Raises:
        TransformError: bad ``sparsity``, ``importance``, ``round_to`` or
            ``allocation``, or ``"taylor"`` without ``data``.
        UnsupportedModelError: a subclassed or wrapped (not stripped) model.
        LayerSelectionError: ``layers`` selects no prunable group.

    Example:
        >>> slim = prune_channels(model, sparsity=0.5, importance="l2", round_to=8)
        >>> slim.count_params() < model.count_params()
        True
    """
    _check_options(sparsity, importance, data, round_to, allocation)
    _check_plain(model)
    if target is not None:  # before pruning and fine-tuning: stop here, not at export
        from kmot.export.check import compatibility_problems

        if problem := compatibility_problems(model, target):
            raise TransformError(f"{problem} Received: target={target!r}")
    graph = ChannelGraph(model)
    groups = graph.groups()
    candidates = _candidates(model, groups, layers)
    _warn_fixed(groups)
    scores = _scores(graph, model, candidates, importance, data, loss)
    removed = _choose(candidates, scores, sparsity, round_to, allocation)
    return graph.rebuild(lambda root: root not in removed)


# -- shared with channel masks (`kmot.sparsity.channel_masks`) --------------------------


def _check_options(sparsity, importance, data, round_to, allocation) -> None:
    if (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
            or not 0 <= sparsity < 1):
        raise TransformError(
            f"Expected sparsity in [0, 1): the fraction of channels to remove. Received: {sparsity!r}")
    if not callable(importance) and importance not in IMPORTANCES:
        raise TransformError(
            f"Unknown importance. Expected one of {IMPORTANCES} or a callable "
            f"fn(slices) -> float. Received: {importance!r}")
    if importance == "taylor" and data is None:
        raise TransformError(
            "importance='taylor' ranks channels by the loss change their removal causes, "
            "which needs data. Expected data=(x, y). Received: data=None")
    _check_rounding(round_to, allocation)


def _check_rounding(round_to, allocation) -> None:
    if not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1:
        raise TransformError(f"Expected round_to a positive integer. Received: {round_to!r}")
    if allocation not in _ALLOCATIONS:
        raise TransformError(f"Expected allocation in {_ALLOCATIONS}. Received: {allocation!r}")


def _candidates(model, groups: list[ChannelGroup], layers: LayerSelector) -> list[ChannelGroup]:
    """The prunable groups whose producers `layers` selects (all of them)."""
    selected = make_predicate(layers)
    by_name = {layer.name: layer for layer in walk_layers(model)}
    candidates = [g for g in groups if g.prunable and all(
        selected(by_name[p]) for p in g.producers if p in by_name)]
    if layers is not None and not candidates:
        raise LayerSelectionError(
            f"layers={layers!r} selects no prunable channel group. Expected layers that "
            "produce channels which reach no model output. Received: groups "
            + "; ".join(f"{', '.join(g.producers)}: {g.reason or 'not selected'}" for g in groups))
    return candidates


def _check_plain(model) -> None:
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"Expected a keras.Model. Received: {type(model).__name__}")
    wrapped = [layer for layer in walk_layers(model) if isinstance(layer, OptimizedLayer)]
    from kmot.sparsity.channel_masks import channel_mask_transforms

    if any(channel_mask_transforms(layer) for layer in wrapped):
        raise UnsupportedModelError(
            f"Model '{model.name}' holds channel masks (from mask_channels). Expected a plain "
            "model; remove the masked channels with kmot.sparsity.remove_masked_channels(model), "
            "which returns one. Received: a model with channel masks")
    wrapped = [layer.name for layer in wrapped]
    if wrapped:
        raise UnsupportedModelError(
            f"Model '{model.name}' holds kmot wrappers ({', '.join(wrapped[:5])}). Removing "
            "channels needs plain layers: strip the model first (kmot.core.strip, "
            "strip_pruning or strip_clustering). Received: a wrapped model")


def _warn_fixed(groups: list[ChannelGroup]) -> None:
    fixed = [g for g in groups if not g.prunable and g.reason != "reaches a model output"]
    if fixed:
        warnings.warn(
            "prune_channels keeps these layers' channels whole: "
            + "; ".join(f"{', '.join(g.producers)} ({g.reason})" for g in fixed),
            stacklevel=3)


def _indexed_weights(graph: ChannelGraph, kinds: str):
    """Yields ``(value, axis, roots)`` for every weight axis that channels index (``kinds``:
    kernels or bn scales): the weight as the layer computes with it (a channel mask
    applied) and the channel (root) of each position along `axis`."""
    for rec in graph.records.values():
        layer = rec.layer
        if kinds == "bn":
            if not isinstance(layer, keras.layers.BatchNormalization) or layer.gamma is None:
                continue
            wanted = {id(layer.gamma)}
        else:
            wanted = {id(k.variable) for k in kernels(layer)}
        ids = {"in": rec.in_ids, "out": rec.out_ids, "mid": rec.mid_ids}
        values: dict[int, np.ndarray] = {}  # a kernel indexed on two axes is read once
        for weight_index, axis, side in rec.slices:
            row = ids[side]
            if id(layer.weights[weight_index]) not in wanted or row is None:
                continue
            if weight_index not in values:
                values[weight_index] = graph.weight_value(layer, weight_index)
            yield values[weight_index], axis, [graph.find(i) for i in row.tolist()]


def _channel_slices(graph: ChannelGraph, kinds: str) -> dict[int, list[np.ndarray]]:
    """For each channel root, the weight slices it indexes (for a callable importance)."""
    out: dict[int, list[np.ndarray]] = {}
    for value, axis, roots in _indexed_weights(graph, kinds):
        for position, root in enumerate(roots):
            out.setdefault(root, []).append(np.take(value, position, axis=axis))
    return out


def _channel_sums(graph: ChannelGraph, kinds: str, order: int) -> dict[int, float]:
    """For each channel root, the sum of ``|w| ** order`` over the weight slices it indexes."""
    out: dict[int, float] = {}
    for value, axis, roots in _indexed_weights(graph, kinds):
        rows = np.moveaxis(value, axis, 0).reshape(len(roots), -1).astype(np.float64)
        for root, total in zip(roots, (np.abs(rows) ** order).sum(axis=1).tolist()):
            out[root] = out.get(root, 0.0) + total
    return out


def _scores(graph, model, groups, importance, data, loss) -> dict[int, float]:
    roots = [c for g in groups for c in g.channels]
    if callable(importance):
        slices = _channel_slices(graph, "kernels")
        return {r: float(importance(slices.get(r, []))) for r in roots}
    if importance == "taylor":
        return _taylor(graph, model, roots, data, loss)
    order = 1 if importance == "l1" else 2
    sums = _channel_sums(graph, "kernels", order)
    norms = {r: sums.get(r, 0.0) ** (1 / order) for r in roots}
    if importance != "bn":
        return norms
    gammas = _channel_sums(graph, "bn", 1)
    without = [g for g in groups if not all(c in gammas for c in g.channels)]
    if without:
        warnings.warn("importance='bn': no BatchNormalization scale for the channels of "
                      + ", ".join(p for g in without for p in g.producers) + "; they are "
                      "ranked by their l2 norm instead", stacklevel=3)
    plain = {c for g in without for c in g.channels}
    return {r: norms[r] if r in plain else gammas[r] for r in roots}


def _taylor(graph, model, roots, data, loss) -> dict[int, float]:
    try:
        x, y = data
    except (TypeError, ValueError) as err:
        raise TransformError(f"Expected data=(x, y) arrays for importance='taylor'. "
                             f"Received: {type(data).__name__}") from err
    loss_fn = loss or getattr(model, "loss", None)
    if isinstance(loss_fn, str):
        loss_fn = keras.losses.get(loss_fn)
    if loss_fn is None:
        raise TransformError(
            "importance='taylor' needs a loss. Expected a compiled model or loss=... "
            "(e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True)). "
            "Received: an uncompiled model and loss=None")
    x, y = np.asarray(x)[:512], np.asarray(y)[:512]
    variables = [k.variable for rec in graph.records.values() for k in kernels(rec.layer)]
    totals = {r: 0.0 for r in roots}
    for start in range(0, len(x), 64):
        grads = _gradients(model, variables, x[start:start + 64], y[start:start + 64], loss_fn)
        products = {id(v): np.asarray(v) * g for v, g in zip(variables, grads)}
        per_channel = {r: 0.0 for r in roots}
        for rec in graph.records.values():
            ids = {"in": rec.in_ids, "out": rec.out_ids, "mid": rec.mid_ids}
            for weight_index, axis, side in rec.slices:
                product = products.get(id(rec.layer.weights[weight_index]))
                if product is None or ids[side] is None:
                    continue
                sums = np.moveaxis(product, axis, 0).reshape(product.shape[axis], -1).sum(-1)
                for position, i in enumerate(ids[side].tolist()):
                    root = graph.find(i)
                    if root in per_channel:
                        per_channel[root] += float(sums[position])
        for r in roots:
            totals[r] += per_channel[r] ** 2
    return totals


def _gradients(model, variables, x, y, loss_fn) -> list[np.ndarray]:
    """d loss / d variable on one batch, on the active backend (inference mode)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_fn(y, model(x, training=False))
        return [np.asarray(g) for g in tape.gradient(value, [v.value for v in variables])]
    if backend == "jax":
        import jax

        trainable, others = model.trainable_variables, model.non_trainable_variables

        def f(values):
            out, _ = model.stateless_call(values, [v.value for v in others], x, training=False)
            return loss_fn(y, out)

        grads = jax.grad(f)([v.value for v in trainable])
        index = {id(v): i for i, v in enumerate(trainable)}
        return [np.asarray(grads[index[id(v)]]) for v in variables]
    if backend == "torch":
        for v in variables:
            v.value.grad = None
        loss_fn(y, model(x, training=False)).backward()
        return [v.value.grad.detach().cpu().numpy() for v in variables]
    raise UnsupportedModelError(f"importance='taylor' has no gradient path on the {backend} backend")


def _keep_count(size: int, remove: int, round_to: int) -> int:
    keep = max(size - remove, 1)
    keep = -(-keep // round_to) * round_to  # round up to a multiple
    return min(keep, size)


def _choose(groups, scores, sparsity, round_to, allocation) -> set[int]:
    """The channel roots to remove."""
    removed: set[int] = set()
    if allocation == "global":
        normalized = []
        for g in groups:
            mean = float(np.mean([scores[c] for c in g.channels])) or 1.0
            normalized += [(scores[c] / mean, g.index, c) for c in g.channels]
        normalized.sort()
        budget = int(sparsity * len(normalized))
        per_group: dict[int, int] = {}
        for _, index, _c in normalized[:budget]:
            per_group[index] = per_group.get(index, 0) + 1
        targets = {g.index: per_group.get(g.index, 0) for g in groups}
    else:
        targets = {g.index: int(sparsity * g.size) for g in groups}
    for g in groups:
        keep = _keep_count(g.size, targets[g.index], round_to)
        ranked = sorted(g.channels, key=lambda c: scores[c])
        removed.update(ranked[:g.size - keep])
    return removed
