"""`prune_low_magnitude` / `strip_pruning`: magnitude pruning for Keras 3 models."""

from __future__ import annotations

import warnings
from typing import Any

import keras

from kmot.core import (OptimizedLayer, clone_model, flatten_chain, is_graph_model, kernel_layouts,
                       kernels, strip)
from kmot.core.kernels import warn_unknown_weights
from kmot.core.selection import LayerSelector, make_predicate, walk_layers
from kmot.errors import LayerSelectionError, TransformError
from kmot.sparsity.schedule import PruningSchedule
from kmot.sparsity.transform import PruneTransform

__all__ = ["prune_low_magnitude", "strip_pruning", "prunable_weights"]

def prunable_weights(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The weights kmot prunes in `layer`: its kernels (empty: the layer passes through).

    Kernels come from `kmot.core.kernels`: built-in layers (Dense, EinsumDense,
    convolutions, Embedding, recurrent cells, and layers made of them, such as
    LSTM or MultiHeadAttention), and custom layers declaring theirs with
    ``get_kernel_layouts()`` or tfmot's ``get_prunable_weights()``.
    """
    return [k.variable for k in kernels(layer)]


def _check_schedule(schedule: Any) -> PruningSchedule:
    if not isinstance(schedule, PruningSchedule):
        raise TransformError(
            "`pruning_schedule` must be a kmot.sparsity schedule, e.g. "
            "PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, "
            f"end_step=1000). Received: pruning_schedule={schedule!r}"
        )
    return schedule


def _check_pattern(block_size, pooling, m_by_n):
    if (not isinstance(block_size, (tuple, list)) or len(block_size) != 2
            or not all(isinstance(b, int) and b >= 1 for b in block_size)):
        raise TransformError(
            f"`block_size` must be two ints >= 1, e.g. (1, 1) or (4, 4). "
            f"Received: block_size={block_size!r}"
        )
    if pooling not in ("AVG", "MAX"):
        raise TransformError(
            f"`block_pooling_type` must be 'AVG' or 'MAX'. Received: block_pooling_type={pooling!r}"
        )
    if m_by_n is not None:
        ok = (isinstance(m_by_n, (tuple, list)) and len(m_by_n) == 2
              and all(isinstance(v, int) for v in m_by_n) and 0 < m_by_n[0] < m_by_n[1])
        if not ok:
            raise TransformError(
                "`sparsity_m_by_n` must be (n, m) ints with 0 < n < m, e.g. (2, 4): keep 2 "
                f"of every 4 weights. Received: sparsity_m_by_n={m_by_n!r}"
            )
        if tuple(block_size) != (1, 1):
            raise TransformError(
                "`sparsity_m_by_n` and `block_size` are two different patterns; choose one. "
                f"Received: block_size={tuple(block_size)}, sparsity_m_by_n={tuple(m_by_n)}"
            )


def _n_of_m_problem(layer, kernel, m) -> str | None:
    """Why `kernel` cannot take an N:M pattern along its input channels, or None."""
    axes = kernel.in_axes()
    if len(axes) != 1 or kernel.layout.channelwise:
        return (f"{type(layer).__name__} (N:M groups run along one input-channel axis, "
                f"which its {kernel.key!r} does not have)")
    channels = int(kernel.variable.shape[axes[0]])
    if channels % m:
        return f"{channels} input channels, not a multiple of {m}"
    return None


def _prunable_keys(layer: keras.layers.Layer) -> list[str]:
    """Keys of the weights to prune in `layer` (built or not)."""
    if not layer.built and callable(getattr(layer, "get_prunable_weights", None)):
        raise TransformError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is not built, so its "
            "get_prunable_weights() has nothing to return yet. Build it first "
            "(layer.build(input_shape) or call it on data). Received: an unbuilt layer"
        )
    return [k.key for k in kernel_layouts(layer)]


def _wrap(layer, schedule, block_size, pooling, m_by_n, explicit, skipped):
    """Wraps one layer copy with prune transforms; returns None to leave it alone."""
    inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
    keys = _prunable_keys(inner)
    if not keys:
        if explicit:
            raise LayerSelectionError(
                f"Layer '{inner.name}' ({type(inner).__name__}) has no prunable weights. "
                "Select other layers with `layers=` or implement `get_prunable_weights()`. "
                f"Received: layers selecting '{inner.name}'"
            )
        return None
    axes = {}
    if m_by_n:
        if not inner.built:
            raise TransformError(
                f"Layer '{inner.name}' is not built, so its input channels are unknown to "
                f"check {m_by_n[0]}:{m_by_n[1]} sparsity. Build it first "
                "(layer.build(input_shape)). Received: an unbuilt layer"
            )
        found = kernels(inner)
        problems = [_n_of_m_problem(inner, k, m_by_n[1]) for k in found]
        if any(problems):
            reason = next(p for p in problems if p)
            if explicit:
                raise TransformError(
                    f"Layer '{inner.name}' cannot take {m_by_n[0]}:{m_by_n[1]} sparsity: "
                    f"{reason}. Leave it out with `layers=`. Received: sparsity_m_by_n={m_by_n}"
                )
            skipped.append(f"{inner.name} ({reason})")
            return None
        axes = {k.key: k.layout.in_axes[0] for k in found}
    wrapper = layer if isinstance(layer, OptimizedLayer) else OptimizedLayer(layer, {})
    for key in keys:
        wrapper.add_transform(key, PruneTransform(
            schedule, block_size=block_size, block_pooling_type=pooling,
            sparsity_m_by_n=m_by_n, n_of_m_axis=axes.get(key, -2),
        ))
    return wrapper


#: Pruning policies: ``"xnnpack"`` prunes only the layers XNNPACK's sparse
#: inference runs faster (1x1 Conv2D, stride 1, no dilation or groups).
PRUNING_POLICIES = ("xnnpack",)


def _xnnpack_sparse(layer: keras.layers.Layer) -> bool:
    """A pointwise convolution, the one kind XNNPACK's sparse kernels accelerate."""
    return (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1 and layer.data_format == "channels_last")


def _policy_layers(model, policy, layers: LayerSelector) -> LayerSelector:
    """`layers` narrowed by the pruning policy (a predicate), checked to select something."""
    if policy is None:
        return layers
    if policy not in PRUNING_POLICIES:
        raise TransformError(
            f"Unknown pruning_policy. Expected None or one of {PRUNING_POLICIES}. Received: "
            f"pruning_policy={policy!r}")
    chosen = make_predicate(layers)
    found = [layer.name for layer in walk_layers(model) if chosen(layer) and _xnnpack_sparse(layer)]
    if not found:
        raise TransformError(
            f"pruning_policy='xnnpack' prunes only 1x1 Conv2D layers (stride 1, no dilation or "
            f"groups), the ones XNNPACK's sparse inference runs faster, and model "
            f"'{model.name}' has none{' among the selected layers' if layers is not None else ''}"
            ". Expected a model with pointwise convolutions (MobileNet-style). Received: "
            f"{sorted({type(layer).__name__ for layer in walk_layers(model)})}")
    return found


def prune_low_magnitude(
    to_prune: keras.Model | keras.layers.Layer,
    *,
    pruning_schedule: PruningSchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    block_pooling_type: str = "AVG",
    sparsity_m_by_n: tuple[int, int] | None = None,
    layers: LayerSelector = None,
    sparsity_allocation: str = "uniform",
    pruning_policy: str | None = None,
) -> keras.Model | OptimizedLayer:
    """Wraps a model's (or one layer's) prunable weights for magnitude pruning.

    Args:
        to_prune: a Sequential/Functional model (a pruned copy is returned; the
            input is untouched) or a single layer (returned wrapped, for use
            inside your own model).
        pruning_schedule: when masks update and to what sparsity
            (`PolynomialDecay`, `ConstantSparsity`); default
            ``ConstantSparsity(0.5, begin_step=0, frequency=100)``, as tfmot's.
        block_size: prune (rows, cols) blocks instead of single weights.
        block_pooling_type: ``"AVG"`` or ``"MAX"``: how a block is scored.
        sparsity_m_by_n: ``(n, m)`` structured sparsity: keep n of every m weights
            along the input channels (2:4 runs fast on sparse kernels). Layers
            that cannot take it are skipped with a warning unless named in `layers`.
        layers: which layers to prune (name, regex, class, predicate or list);
            None prunes every layer with prunable weights.
        sparsity_allocation: ``"uniform"`` (tfmot's behaviour): every weight
            reaches the schedule's sparsity. ``"global"``: the same overall
            sparsity, spread across weights by one magnitude ranking of all of
            them at wrap time (no weight above 98%), so small, crowded layers
            (a first conv, a classifier) keep more weights than large, redundant
            ones. Usually more accurate at the same size; not for N:M.
        pruning_policy: ``"xnnpack"``: prune only the layers XNNPACK's sparse
            inference accelerates (1x1 Conv2D, stride 1), among `layers`.

    Returns:
        The model with `OptimizedLayer` wrappers (train it, then `strip_pruning`).

    Raises:
        LayerSelectionError: `layers` names a layer with nothing to prune.
        TransformError: an invalid schedule or pattern.
        ScheduleError: invalid schedule values (raised by the schedule).

    Example:
        >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
        >>> pruned = prune_low_magnitude(model, pruning_schedule=schedule)  # doctest: +SKIP
        >>> pruned.fit(x, y, epochs=5)        # the pruning step advances itself
        >>> final = strip_pruning(pruned)     # plain layers, exact zeros
    """
    if pruning_schedule is None:
        from kmot.sparsity.schedule import ConstantSparsity

        pruning_schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
    schedule = _check_schedule(pruning_schedule)
    _check_pattern(block_size, block_pooling_type, sparsity_m_by_n)
    m_by_n = tuple(sparsity_m_by_n) if sparsity_m_by_n else None
    block_size = tuple(block_size)
    skipped: list[str] = []
    if sparsity_allocation not in ("uniform", "global"):
        raise TransformError(
            "`sparsity_allocation` must be 'uniform' or 'global'. "
            f"Received: sparsity_allocation={sparsity_allocation!r}"
        )
    if sparsity_allocation == "global" and m_by_n:
        raise TransformError(
            "sparsity_allocation='global' spreads a sparsity across layers; an N:M pattern "
            "fixes it per group. Use one of them. Received: sparsity_m_by_n="
            f"{m_by_n}, sparsity_allocation='global'"
        )

    if not isinstance(to_prune, keras.Model):
        if not isinstance(to_prune, keras.layers.Layer):
            raise TransformError(
                f"Expected a keras.Model or a keras layer to prune. Received: {type(to_prune).__name__}"
            )
        if pruning_policy is not None:
            raise TransformError(
                "pruning_policy applies to a model (it chooses among its layers). Expected "
                "a keras.Model with pruning_policy, or a layer without it. Received: layer "
                f"'{to_prune.name}' with pruning_policy={pruning_policy!r}")
        return _wrap(to_prune, schedule, block_size, block_pooling_type, m_by_n, True, skipped)

    if not is_graph_model(to_prune) and not getattr(to_prune, "_call_has_training_arg", True):
        raise TransformError(
            f"Model '{to_prune.name}' ({type(to_prune).__name__}) has a call() without a "
            "`training` argument, so Keras's fit runs it in inference mode and the pruning "
            "masks would never update (nor would BatchNormalization or Dropout train). "
            "Expected call(self, x, training=None) passing `training` on to its layers, or "
            "Keras passes it by itself. Received: call() without `training`"
        )
    layers = _policy_layers(to_prune, pruning_policy, layers)
    named = _named(layers)  # layers the user named: an error, not a skip, if unprunable
    selected = make_predicate(layers)
    if layers is not None and not any(selected(layer) for layer in walk_layers(to_prune)):
        raise LayerSelectionError(
            f"`layers=` selects no layer of model '{to_prune.name}'. Expected names from "
            f"{sorted(layer.name for layer in walk_layers(to_prune))}. Received: layers={layers!r}"
        )
    schedules: dict[str, PruningSchedule] = {}
    if sparsity_allocation == "global":
        schedules = _global_schedules(to_prune, selected, schedule)
    pruned = clone_model(
        to_prune,
        layers=layers,
        replace=lambda layer: _wrap(layer, schedules.get(layer.name, schedule), block_size,
                                    block_pooling_type, m_by_n, layer.name in named, skipped),
    )
    warn_unknown_weights(to_prune, selected, "prune_low_magnitude")
    if skipped:
        warnings.warn(
            f"{m_by_n[0]}:{m_by_n[1]} sparsity skipped {len(skipped)} layer(s) that cannot take "
            f"it: {', '.join(skipped)}. They stay dense.",
            stacklevel=2,
        )
    return pruned


def _global_schedules(model, selected, schedule, cap: float = 0.98):
    """Per-layer schedules reaching `schedule`'s sparsity overall, by one ranking.

    Finds the magnitude threshold t at which sum_l min(frac_l(|w| <= t), cap) * n_l
    equals final_sparsity * N, so the overall sparsity is exact.
    """
    import numpy as np

    from kmot.sparsity.schedule import ScaledSparsity

    target = schedule.final_sparsity
    mags = {}
    for layer in walk_layers(model):
        if selected(layer):
            inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
            values = [np.abs(np.asarray(v.numpy())).ravel() for v in prunable_weights(inner)]
            if values:
                mags[layer.name] = np.sort(np.concatenate(values))
    total = sum(m.size for m in mags.values())
    if not mags or target == 0:
        return {}

    def pruned_at(t):
        return {k: min(np.searchsorted(m, t, side="right") / m.size, cap) for k, m in mags.items()}

    lo, hi = 0.0, float(max(m[-1] for m in mags.values()))
    for _ in range(60):
        mid = (lo + hi) / 2
        frac = pruned_at(mid)
        if sum(frac[k] * mags[k].size for k in mags) < target * total:
            lo = mid
        else:
            hi = mid
    frac = pruned_at(hi)
    return {k: ScaledSparsity(schedule, frac[k] / target) for k in mags}


def _named(layers: LayerSelector) -> set[str]:
    if isinstance(layers, str):
        return {layers}
    if isinstance(layers, (list, tuple, set, frozenset)):
        return {item for item in layers if isinstance(item, str)}
    return set()


def _is_pruning(transform) -> bool:
    return isinstance(transform, PruneTransform)


def _has_pruning(wrapper: OptimizedLayer) -> bool:
    return any(_is_pruning(t) for chain in wrapper.transforms.values() for t in flatten_chain(chain))


def strip_pruning(model: keras.Model) -> keras.Model:
    """Removes pruning wrappers: plain layers whose pruned weights are exact zeros.

    Each weight's chain is baked up to its pruning mask; transforms after it (a
    clustering, a fake quantization) stay, in a wrapper, with their state. Works
    on nested and subclassed models; a model with nothing to strip comes back
    as a plain copy, so stripping twice is harmless.

    Example:
        >>> final = strip_pruning(pruned)  # doctest: +SKIP
    """
    return strip(model, wrappers=_has_pruning, through=_is_pruning)
