"""Pruning for Keras 3: magnitude (schedules, block and N:M patterns, strip, summaries)
and structured: whole channels removed, at once (`prune_channels`) or gradually
(`mask_channels`, then `remove_masked_channels`)."""

from kmot.sparsity.channel_masks import ChannelMaskTransform, mask_channels, remove_masked_channels
from kmot.sparsity.channels import channel_groups, prune_channels

from kmot.sparsity.callbacks import UpdatePruningStep
from kmot.sparsity.prune import prunable_weights, prune_low_magnitude, strip_pruning
from kmot.sparsity.schedule import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    ScaledSparsity,
    ScheduleError,
)
from kmot.sparsity.summary import SparsitySummary, WeightSparsity, summary
from kmot.sparsity.tensorboard import PruningSummaries
from kmot.sparsity.transform import PruneTransform

__all__ = [
    "ChannelMaskTransform",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneTransform",
    "PruningSummaries",
    "PruningSchedule",
    "ScaledSparsity",
    "ScheduleError",
    "SparsitySummary",
    "UpdatePruningStep",
    "WeightSparsity",
    "channel_groups",
    "mask_channels",
    "prunable_weights",
    "prune_channels",
    "prune_low_magnitude",
    "remove_masked_channels",
    "strip_pruning",
    "summary",
]
