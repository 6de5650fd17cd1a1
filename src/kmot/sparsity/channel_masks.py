"""Gradual channel pruning: channel masks ramped by a schedule, then channels removed.

`mask_channels` wraps every weight axis that a prunable channel group indexes
(producers' output axes and biases, BatchNormalization's scale and offset,
depthwise kernels, consumers' input rows) with a `ChannelMaskTransform`. While
the model trains, the `UpdatePruningStep` callback re-ranks the channels at the
schedule's update steps, with `prune_channels`'s ranking (l1, l2 or bn of the
masked weights) and allocation, and writes each group's decision into every
mask of the group at once: coupled layers cannot disagree. A masked channel is
exactly zero wherever it is read, so `remove_masked_channels` removes it
without changing the outputs.

Why a callback and not the training step itself (as `PruneTransform` does): a
channel's importance sums over the weights of several layers, and a transform
sees only its own weight. The ranking runs eagerly between steps, on every
backend; the masks are variables of the wrapped layers, so they save and load
with the model.

A layer's own state (non-trainable weights of a trainable layer, such as
BatchNormalization's moving mean and variance) is not masked: a transform on it
would stop its updates, and a zero scale and offset make the channel's output
zero whatever the statistics hold.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from kmot.core.channels import ChannelGraph
from kmot.core.constraints import apply_mask
from kmot.core.graph import clone_model
from kmot.core.selection import LayerSelector, walk_layers
from kmot.core.transform import WeightTransform, flatten_chain
from kmot.core.wrapper import OptimizedLayer, weight_key, weight_keys
from kmot.errors import TransformError, UnsupportedModelError
from kmot.sparsity.channels import (
    _candidates,
    _check_plain,
    _check_rounding,
    _choose,
    _keep_count,
    _scores,
    _warn_fixed,
)
from kmot.sparsity.schedule import PruningSchedule

__all__ = ["ChannelMaskTransform", "channel_mask_transforms", "mask_channels",
           "remove_masked_channels"]

#: Importances a channel mask can be ranked by (saved with the model, so no callable).
MASK_IMPORTANCES = ("l1", "l2", "bn")


@keras.saving.register_keras_serializable(package="kmot")
class ChannelMaskTransform(WeightTransform):
    """Zeroes the slices of a weight along `axis` whose channel is masked.

    The mask (one 0/1 entry per position of `axis`) and the pruning step are
    state; the `UpdatePruningStep` callback writes them, the same decision into
    every mask of a channel group (see `mask_channels`). The options say how
    the callback ranks and how far it prunes; every mask of a model holds the
    same ones.

    Args:
        axis: the weight axis the channels index (non-negative).
        schedule: a `PruningSchedule`: when masks update, to what sparsity.
        importance: ``"l1"``, ``"l2"`` or ``"bn"`` (see `prune_channels`).
        round_to: keep a multiple of this many channels per group.
        allocation: ``"uniform"`` or ``"global"`` (see `prune_channels`).
    """

    def __init__(self, axis: int, schedule: PruningSchedule, *, importance: str = "l2",
                 round_to: int = 1, allocation: str = "uniform"):
        self.axis = int(axis)
        self.schedule = schedule
        self.importance = importance
        self.round_to = round_to
        self.allocation = allocation

    def build(self, weight, add_weight):
        if not 0 <= self.axis < len(weight.shape):
            raise TransformError(
                f"Weight '{weight.path}' of shape {weight.shape} has no axis {self.axis}. "
                f"Expected an axis in [0, {len(weight.shape)}). Received: axis={self.axis}")
        self.mask = add_weight("channel_mask", (weight.shape[self.axis],), initializer="ones")
        self.step = add_weight("step", (), initializer=keras.initializers.Constant(-1),
                               dtype="int32")

    def _full(self, value):
        shape = [1] * len(value.shape)
        shape[self.axis] = value.shape[self.axis]
        return ops.reshape(self.mask.value, shape)

    def __call__(self, value, *, training):
        return apply_mask(value, self._full(value))

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis, "schedule": keras.saving.serialize_keras_object(self.schedule),
                "importance": self.importance, "round_to": self.round_to,
                "allocation": self.allocation}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def channel_mask_transforms(layer) -> list[ChannelMaskTransform]:
    """The channel masks of a wrapped layer (or of every layer of a model)."""
    if isinstance(layer, keras.Model):
        return [t for inner in walk_layers(layer) for t in channel_mask_transforms(inner)]
    if not isinstance(layer, OptimizedLayer):
        return []
    return [t for chain in layer.transforms.values() for t in flatten_chain(chain)
            if isinstance(t, ChannelMaskTransform)]


def mask_channels(
    model: keras.Model,
    *,
    pruning_schedule: PruningSchedule,
    importance: str = "l2",
    round_to: int = 1,
    layers: LayerSelector = None,
    allocation: str = "uniform",
) -> keras.Model:
    """Wraps a model for gradual channel pruning: masks that a schedule ramps in training.

    Fine-tune the result with ``callbacks=[kmot.sparsity.UpdatePruningStep()]``:
    at the schedule's update steps it ranks the channels as `prune_channels`
    does (on the masked weights, so a masked channel stays masked) and masks
    the schedule's fraction of each group (``allocation="uniform"``) or of all
    prunable channels (``"global"``). Then `remove_masked_channels` returns the
    slim plain model, computing what the masked one does.

    Args:
        model: a Functional or Sequential model (the input is untouched).
        pruning_schedule: when masks update and to what sparsity, e.g.
            ``PolynomialDecay(0.0, 0.5, begin_step=0, end_step=300, frequency=10)``;
            the sparsity is the fraction of channels masked.
        importance: ``"l1"`` / ``"l2"``: the norm of every kernel slice a channel
            indexes; ``"bn"``: the absolute BatchNormalization scale (groups
            without one use ``"l2"``).
        round_to: keep a multiple of this many channels per group (8 suits SIMD).
        layers: only groups whose producers are all selected are masked.
        allocation: ``"uniform"`` or ``"global"`` (see `prune_channels`).

    Returns:
        A copy of the model with `OptimizedLayer` wrappers holding the masks
        (all ones until training starts), uncompiled.

    Raises:
        TransformError: a bad schedule, ``importance``, ``round_to`` or ``allocation``.
        UnsupportedModelError: a subclassed or wrapped model, or one with no
            prunable channel group.
        LayerSelectionError: ``layers`` selects no prunable group.

    Example:
        >>> schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=200, frequency=10)
        >>> masked = mask_channels(model, pruning_schedule=schedule)  # doctest: +SKIP
        >>> masked.compile(...); masked.fit(x, y, epochs=5, callbacks=[UpdatePruningStep()])
        >>> slim = remove_masked_channels(masked)
    """
    if not isinstance(pruning_schedule, PruningSchedule):
        raise TransformError(
            "`pruning_schedule` must be a kmot.sparsity schedule, e.g. PolynomialDecay("
            "initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=300, frequency=10). "
            f"Received: pruning_schedule={pruning_schedule!r}")
    if importance not in MASK_IMPORTANCES:
        raise TransformError(
            f"Unknown importance for channel masks. Expected one of {MASK_IMPORTANCES}: the "
            "masks rank channels again at every update and save the criterion with the "
            "model ('taylor' and callables rank once: use prune_channels for them). "
            f"Received: importance={importance!r}")
    _check_rounding(round_to, allocation)
    _check_plain(model)
    graph = ChannelGraph(model)
    groups = graph.groups()
    candidates = _candidates(model, groups, layers)
    if not candidates:
        raise UnsupportedModelError(
            f"Model '{model.name}' has no prunable channel group: every layer's channels "
            "reach a model output or pass through an op that cannot be mapped. Expected a "
            "convolution or Dense whose outputs feed other layers; see "
            "kmot.sparsity.channel_groups(model) for each group's reason. Received: groups "
            + "; ".join(f"{', '.join(g.producers)}: {g.reason}" for g in groups))
    _warn_fixed(groups)
    roots = {c for g in candidates for c in g.channels}
    plan: dict[str, list[tuple[str, int]]] = {}
    for rec in graph.records.values():
        ids = {"in": rec.in_ids, "out": rec.out_ids, "mid": rec.mid_ids}
        for weight_index, axis, side in rec.slices:
            variable = rec.layer.weights[weight_index]
            row = ids[side]
            state = rec.layer.trainable and not variable.trainable  # e.g. moving statistics
            if not state and row is not None and any(
                    graph.find(int(i)) in roots for i in row):
                use = (weight_key(rec.layer, variable), axis)
                if use not in plan.setdefault(rec.layer.name, []):
                    plan[rec.layer.name].append(use)
    options = {"importance": importance, "round_to": round_to, "allocation": allocation}

    def wrap(layer):
        uses = plan.get(layer.name)
        if not uses:
            return None
        chains: dict[str, list[WeightTransform]] = {}
        for key, axis in uses:
            chains.setdefault(key, []).append(
                ChannelMaskTransform(axis, pruning_schedule, **options))
        return OptimizedLayer(layer, chains)

    return clone_model(model, replace=wrap)


@dataclass
class _Slot:
    """One mask and the channel (root) of each of its positions."""

    transform: ChannelMaskTransform
    roots: np.ndarray
    producer_out: bool  # a producer's output axis: its channels are the ones masked


def _slots(graph: ChannelGraph, model: keras.Model) -> list[_Slot]:
    slots, found = [], set()
    for rec in graph.records.values():
        wrapper = graph.wrapper(rec.layer)
        if wrapper is None:
            continue
        chains, keys = wrapper.transforms, weight_keys(rec.layer)
        ids = {"in": rec.in_ids, "out": rec.out_ids, "mid": rec.mid_ids}
        for weight_index, axis, side in rec.slices:
            for t in chains.get(keys[weight_index], []):
                if isinstance(t, ChannelMaskTransform) and t.axis == axis and ids[side] is not None:
                    roots = np.array([graph.find(int(i)) for i in ids[side]])
                    slots.append(_Slot(t, roots, rec.kind == "producer" and side == "out"))
                    found.add(id(t))
    lost = [t for t in channel_mask_transforms(model) if id(t) not in found]
    if lost:
        raise TransformError(
            f"Model '{model.name}' holds {len(lost)} channel mask(s) on weight axes that index "
            "no channel of its graph. Expected the model returned by mask_channels(...) "
            f"(its graph unchanged). Received: masks on axes {[t.axis for t in lost]}")
    return slots


class _MaskUpdater:
    """A masked model's channel graph and masks: ranks and writes them (for
    `UpdatePruningStep`), reads them (for `remove_masked_channels`)."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.graph = ChannelGraph(model)
        self.slots = _slots(self.graph, model)
        first = self.slots[0].transform
        self.schedule, self.importance = first.schedule, first.importance
        self.round_to, self.allocation = first.round_to, first.allocation
        masked_out = {int(r) for s in self.slots if s.producer_out for r in s.roots}
        self.groups = [g for g in self.graph.groups()
                       if g.prunable and set(g.channels) <= masked_out]
        self.step = int(ops.convert_to_numpy(first.step.value))  # the last step run
        self._checked = self.step

    def before_step(self) -> None:
        """Updates the masks if the schedule says so for the next step (or a skipped one:
        with ``steps_per_execution`` > 1 this runs once per block of steps)."""
        step = self.step + 1
        due = any(bool(self.schedule(s)[0]) for s in range(self._checked + 1, step + 1))
        self._checked = step
        if due:
            self.update(float(self.schedule(step)[1]))

    def after_steps(self, count: int = 1) -> None:
        self.step += count

    def update(self, sparsity: float) -> None:
        """Masks the least important `sparsity` of the channels, ranked on the masked weights."""
        _sync_jax_state(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bn without a scale: mask_channels warned once
            scores = _scores(self.graph, self.model, self.groups, self.importance, None, None)
        removed = _choose(self.groups, scores, sparsity, self.round_to, self.allocation)
        for slot in self.slots:
            mask = np.array([r not in removed for r in slot.roots.tolist()])
            slot.transform.mask.assign(mask.astype(slot.transform.mask.dtype))
        self.save_step()

    def save_step(self) -> None:
        """Writes the step into the model, so that a later fit (or a reload) resumes it."""
        _sync_jax_state(self.model)
        for slot in self.slots:
            slot.transform.step.assign(self.step)

    def masked(self) -> set[int]:
        """The masked channels (roots); raises if two masks disagree on one."""
        masked, kept = set(), set()
        for slot in self.slots:
            on = np.asarray(ops.convert_to_numpy(slot.transform.mask.value)) > 0
            masked.update(slot.roots[~on].tolist())
            kept.update(slot.roots[on].tolist())
        if masked & kept:
            raise TransformError(
                f"The channel masks of model '{self.model.name}' disagree: "
                f"{len(masked & kept)} channel(s) are masked on some weights and kept on others, "
                "so removing them would change the outputs. Expected masks written by "
                "UpdatePruningStep only (coupled layers share one decision). Received: masks "
                "edited by hand")
        return masked

    def masked_fraction(self) -> float:
        """The fraction of the masked groups' channels that are masked."""
        total = sum(g.size for g in self.groups)
        return len(self.masked() & {c for g in self.groups for c in g.channels}) / total

    def check_begun(self) -> None:
        """No channel is masked: fine if the schedule asks for none yet, else the
        model was trained without the callback."""
        begun = self.step >= self.schedule.begin_step
        sparsity = float(self.schedule.sparsity(self.step)) if begun else 0.0
        if self.allocation == "global":
            due = int(sparsity * sum(g.size for g in self.groups)) > 0
        else:
            due = any(_keep_count(g.size, int(sparsity * g.size), self.round_to) < g.size
                      for g in self.groups)
        if self.step < 0 or due:
            raise TransformError(
                f"No channel of model '{self.model.name}' is masked (pruning step {self.step}, "
                f"schedule sparsity {sparsity:.0%}). The masks update only while the model "
                "trains with the callback. Expected: fit(..., callbacks="
                "[kmot.sparsity.UpdatePruningStep()]) first; to prune at once, use "
                "prune_channels. Received: every mask all ones")


def _sync_jax_state(model) -> None:
    # On JAX, fit keeps the variables' values in its own state between steps; a
    # callback that reads or writes variables must sync it first (Keras then
    # reloads the state from the variables before the next step).
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def remove_masked_channels(model: keras.Model) -> keras.Model:
    """The plain model without the channels its masks zero: smaller, same outputs.

    Args:
        model: a model from `mask_channels`, trained with `UpdatePruningStep`.

    Returns:
        A new plain model with the same inputs, outputs and layer names and the
        masked channels removed, uncompiled; its outputs equal the masked
        model's (float rounding aside).

    Raises:
        TransformError: the model holds no channel masks, or other transforms
            beside them, or masks that disagree on a channel, or no channel is
            masked though the schedule has begun (trained without the callback).
        UnsupportedModelError: a subclassed model.

    Example:
        >>> slim = remove_masked_channels(masked)  # doctest: +SKIP
    """
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"Expected a keras.Model. Received: {type(model).__name__}")
    masks = channel_mask_transforms(model)
    if not masks:
        raise TransformError(
            f"Model '{model.name}' holds no channel masks. Expected the model returned by "
            "kmot.sparsity.mask_channels(...) and trained; a plain model is pruned at once "
            "with prune_channels. Received: a model without channel masks")
    others = [f"{layer.layer.name} ({type(t).__name__})" for layer in walk_layers(model)
              if isinstance(layer, OptimizedLayer)
              for chain in layer.transforms.values() for t in flatten_chain(chain)
              if not isinstance(t, ChannelMaskTransform)]
    if others:
        raise TransformError(
            "remove_masked_channels removes channels from a model whose wrappers hold channel "
            "masks only. Expected: remove the channels first, then prune, cluster or quantize "
            f"the slim model. Received: {', '.join(others[:5])}")
    state = _MaskUpdater(model)
    masked = state.masked()
    if not masked:
        state.check_begun()
    return state.graph.rebuild(lambda root: root not in masked)
