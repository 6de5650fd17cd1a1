"""Magnitude pruning for Keras 3: schedules, block and N:M patterns, strip, checks."""

from kmot.sparsity.callbacks import UpdatePruningStep
from kmot.sparsity.prune import PRUNABLE_WEIGHTS, prunable_weights, prune_low_magnitude, strip_pruning
from kmot.sparsity.schedule import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    ScaledSparsity,
    ScheduleError,
)
from kmot.sparsity.summary import (
    PatternCheck,
    SparsitySummary,
    WeightSparsity,
    check_tflite_pattern,
    summary,
)
from kmot.sparsity.transform import KeepZerosTransform, PruneTransform

__all__ = [
    "PRUNABLE_WEIGHTS",
    "KeepZerosTransform",
    "ConstantSparsity",
    "PatternCheck",
    "PolynomialDecay",
    "PruneTransform",
    "PruningSchedule",
    "ScaledSparsity",
    "ScheduleError",
    "SparsitySummary",
    "UpdatePruningStep",
    "WeightSparsity",
    "check_tflite_pattern",
    "prunable_weights",
    "prune_low_magnitude",
    "strip_pruning",
    "summary",
]
