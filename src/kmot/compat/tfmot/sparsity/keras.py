"""``tfmot.sparsity.keras`` on kmot: magnitude pruning with tfmot's names and defaults.

Native equivalents: `kmot.sparsity.prune_low_magnitude` (keyword arguments),
`strip_pruning`, `UpdatePruningStep`, `PruningSummaries`, the schedules, and
``pruning_policy="xnnpack"`` for `PruneForLatencyOnXNNPack`.
"""

from __future__ import annotations

import abc
from typing import Any

from kmot import sparsity as _native
from kmot.compat.tfmot._scopes import WRAPPER, custom_scope, unmatched
from kmot.errors import KmotError

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
]

ConstantSparsity = _native.ConstantSparsity
PolynomialDecay = _native.PolynomialDecay
PruningSchedule = _native.PruningSchedule
PruningSummaries = _native.PruningSummaries
UpdatePruningStep = _native.UpdatePruningStep
strip_pruning = _native.strip_pruning


class PrunableLayer(abc.ABC):
    """A custom layer that says which of its weights to prune (tfmot's protocol).

    kmot reads ``get_prunable_weights()`` from any layer, with or without this base.
    """

    @abc.abstractmethod
    def get_prunable_weights(self) -> list[Any]:
        """The weights to prune."""


class PruningPolicy(abc.ABC):
    """Base of tfmot's pruning policies; kmot knows one, `PruneForLatencyOnXNNPack`."""

    native: str = ""


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prune only the layers XNNPACK's sparse inference accelerates (1x1 Conv2D).

    Native: ``prune_low_magnitude(model, pruning_policy="xnnpack")``.
    """

    native = "xnnpack"


def prune_low_magnitude(to_prune, pruning_schedule=None, block_size=(1, 1),
                        block_pooling_type="AVG", pruning_policy=None, sparsity_m_by_n=None,
                        **kwargs):
    """tfmot's signature (positional arguments, default ``ConstantSparsity(0.5, 0)``).

    Raises:
        KmotError: an argument tfmot has and kmot does not, or a policy object that is
            not `PruneForLatencyOnXNNPack`.
    """
    if kwargs:
        raise KmotError(
            f"prune_low_magnitude has no argument(s) {sorted(kwargs)} in kmot. Expected "
            "pruning_schedule, block_size, block_pooling_type, pruning_policy or "
            "sparsity_m_by_n (native: kmot.sparsity.prune_low_magnitude also takes layers= "
            f"and sparsity_allocation=). Received: {sorted(kwargs)}")
    policy = None
    if pruning_policy is not None:
        if not isinstance(pruning_policy, PruningPolicy) or not pruning_policy.native:
            raise KmotError(
                "Expected pruning_policy=PruneForLatencyOnXNNPack() (native: "
                "pruning_policy='xnnpack'). Received: "
                f"{type(pruning_policy).__name__}")
        policy = pruning_policy.native
    return _native.prune_low_magnitude(
        to_prune, pruning_schedule=pruning_schedule, block_size=block_size,
        block_pooling_type=block_pooling_type, sparsity_m_by_n=sparsity_m_by_n,
        pruning_policy=policy)


def prune_scope():
    """tfmot's loading scope: kmot's pruning classes are registered already."""
    return custom_scope()


# tfmot's names kmot has no counterpart of: a KmotError naming the native way.
__getattr__ = unmatched("tfmot.sparsity.keras", {
    "PruneLowMagnitude": f"{WRAPPER}; kmot.sparsity.strip_pruning(model) removes them",
    "pruning_wrapper": f"{WRAPPER}; kmot.sparsity.strip_pruning(model) removes them",
    "prune_registry": "a custom layer's get_prunable_weights() names what to prune",
    "pruning_callbacks": "kmot.sparsity.UpdatePruningStep and kmot.sparsity.PruningSummaries",
})
