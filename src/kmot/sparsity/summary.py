"""Sparsity summaries of Keras models (the weights as the layers compute with them)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from kmot.core import OptimizedLayer, flatten_chain
from kmot.core.rewrite import effective_weights
from kmot.core.selection import walk_layers
from kmot.sparsity.prune import prunable_weights
from kmot.sparsity.transform import PruneTransform

__all__ = ["WeightSparsity", "SparsitySummary", "summary", "pruning_transforms"]


@dataclass(frozen=True)
class WeightSparsity:
    layer: str
    weight: str
    shape: tuple[int, ...]
    zeros: int
    size: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


@dataclass(frozen=True)
class SparsitySummary:
    """Per-weight sparsity of a model's prunable weights (effective values)."""

    weights: tuple[WeightSparsity, ...]

    @property
    def overall(self) -> float:
        size = sum(w.size for w in self.weights)
        return sum(w.zeros for w in self.weights) / size if size else 0.0

    def __str__(self) -> str:
        lines = [f"{'layer':<24} {'weight':<18} {'shape':<18} {'sparsity':>8}"]
        for w in self.weights:
            lines.append(f"{w.layer:<24} {w.weight:<18} {str(w.shape):<18} {w.sparsity:>8.1%}")
        lines.append(f"{'overall':<62} {self.overall:>8.1%}")
        return "\n".join(lines)


def pruning_transforms(model: keras.Model) -> list[PruneTransform]:
    """Every `PruneTransform` in `model` (nested models included)."""
    return [t for layer in walk_layers(model) if isinstance(layer, OptimizedLayer)
            for chain in layer.transforms.values() for t in flatten_chain(chain)
            if isinstance(t, PruneTransform)]


def summary(model: keras.Model) -> SparsitySummary:
    """Sparsity of every prunable weight, as the layer computes with it.

    For a pruned (wrapped) model the mask is applied; for a plain model the
    stored zeros are counted.

    Example:
        >>> print(summary(pruned))  # doctest: +SKIP
    """
    return SparsitySummary(tuple(
        WeightSparsity(layer.name, key, tuple(a.shape), int(np.sum(a == 0)), int(a.size))
        for layer, key, a in effective_weights(model, prunable_weights)))
