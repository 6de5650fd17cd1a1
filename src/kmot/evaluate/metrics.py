"""Task metrics (a small registry plus user callables) and fidelity vs the baseline.

Metrics and fidelity read a model's first output. Named metrics:

- ``"accuracy"`` (alias ``"top1"``): argmax of the output equals the label. Labels
  are class ids, or one-hot/probability rows (their argmax is the label). A
  single-unit output is a binary score: > 0.5 if it lies in [0, 1], else > 0.
- ``"topK"`` (e.g. ``"top5"``; also ``"top_k:5"``): the label is among the K
  largest outputs.
- ``"mae"``, ``"rmse"``: regression errors (lower is better).

A callable ``fn(y_true, y_pred) -> float`` is a metric too, named by its
``__name__`` (or give a dict ``{name: fn}``); set ``fn.higher_is_better = False``
for an error measure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kmot.errors import EvaluationError
from kmot.evaluate.schema import Fidelity

__all__ = ["Metric", "MetricLike", "resolve_metrics", "fidelity"]

MetricLike = str | Callable[[np.ndarray, np.ndarray], float]

_VALID = ("'accuracy' (alias 'top1'), 'topK' such as 'top5' (also 'top_k:5'), 'mae', "
          "'rmse', or a callable fn(y_true, y_pred) -> float")


@dataclass(frozen=True)
class Metric:
    """A named metric: ``fn(y_true, y_pred) -> float`` and its better direction."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        try:
            value = self.fn(y_true, y_pred)
            value = float(value)
        except EvaluationError:
            raise
        except Exception as err:  # a user metric may fail in any way; name it
            raise EvaluationError(
                f"Metric {self.name!r} failed on labels of shape {np.shape(y_true)} and "
                f"outputs of shape {np.shape(y_pred)}. Expected fn(y_true, y_pred) to "
                f"return a number. Received: {type(err).__name__}: {err}"
            ) from err
        if not math.isfinite(value):
            raise EvaluationError(
                f"Metric {self.name!r} must return a finite number. Received: {value}"
            )
        return value


def _labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == y_pred.shape[-1] > 1:
        return y_true.argmax(-1)  # one-hot or soft labels
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    if y_true.shape != y_pred.shape[:-1]:
        raise EvaluationError(
            f"Expected labels of shape {y_pred.shape[:-1]} (class ids) or "
            f"{y_pred.shape} (one-hot) for outputs of shape {y_pred.shape}. "
            f"Received: y of shape {y_true.shape}"
        )
    return y_true.astype(np.int64)


def _binary(y_pred: np.ndarray) -> np.ndarray:
    threshold = 0.5 if y_pred.min() >= 0 and y_pred.max() <= 1 else 0.0
    return (y_pred[..., 0] > threshold).astype(np.int64)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Top-1 accuracy (see the module docstring for label and output forms)."""
    labels = _labels(y_true, y_pred)
    guess = _binary(y_pred) if y_pred.shape[-1] == 1 else y_pred.argmax(-1)
    return float(np.mean(guess == labels))


def top_k(k: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """Top-k accuracy: the label is among the k largest outputs."""

    def fn(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        if y_pred.shape[-1] < k:
            raise EvaluationError(
                f"top{k} needs at least {k} classes. Received: outputs of shape "
                f"{y_pred.shape}. Use a smaller k or 'accuracy'."
            )
        labels = _labels(y_true, y_pred)
        best = np.argpartition(-y_pred, k - 1, axis=-1)[..., :k]
        return float(np.mean(np.any(best == labels[..., None], axis=-1)))

    return fn


def _aligned(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true, np.float64)
    if y_true.shape != y_pred.shape:
        if y_true.size != y_pred.size:
            raise EvaluationError(
                f"Regression metrics need one target per output value. Expected y of "
                f"shape {y_pred.shape}. Received: y of shape {y_true.shape}"
            )
        y_true = y_true.reshape(y_pred.shape)
    return y_true


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(_aligned(y_true, y_pred) - y_pred)))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((_aligned(y_true, y_pred) - y_pred) ** 2)))


def _named(name: str) -> Metric:
    key = name.strip().lower()
    if key in ("accuracy", "top1", "top_1", "top-1", "top_k:1"):
        return Metric("accuracy", accuracy)
    match = re.fullmatch(r"top(?:_k:|[_-])?(\d+)", key)
    if match and int(match[1]) > 0:
        k = int(match[1])
        return Metric(f"top{k}", top_k(k))
    if key in ("mae", "rmse"):
        return Metric(key, mae if key == "mae" else rmse, higher_is_better=False)
    raise EvaluationError(f"Unknown metric. Expected {_VALID}. Received: {name!r}")


def _one(name: str | None, item: Any) -> Metric:
    if isinstance(item, str):
        metric = _named(item)
        return Metric(name, metric.fn, metric.higher_is_better) if name else metric
    if callable(item):
        label = name or getattr(item, "__name__", type(item).__name__)
        return Metric(label, item, bool(getattr(item, "higher_is_better", True)))
    raise EvaluationError(f"Expected each metric to be {_VALID}. Received: {item!r}")


def resolve_metrics(metrics: Sequence[MetricLike] | Mapping[str, MetricLike]) -> list[Metric]:
    """Turns metric names, callables or a ``{name: metric}`` dict into `Metric`s.

    Raises:
        EvaluationError: an unknown name, a non-callable, or two metrics of one name.

    Example:
        >>> [m.name for m in resolve_metrics(["top1", "top_k:5", "mae"])]
        ['accuracy', 'top5', 'mae']
    """
    if isinstance(metrics, (str, bytes)) or callable(metrics):
        metrics = [metrics]
    items = list(metrics.items()) if isinstance(metrics, Mapping) else [(None, m) for m in metrics]
    resolved = [_one(name, item) for name, item in items]
    names = [m.name for m in resolved]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise EvaluationError(
            f"Expected each metric once. Received: {twice} more than once in "
            f"metrics={names}. Give callables distinct names with a dict {{name: fn}}."
        )
    return resolved


def _are_probabilities(z: np.ndarray) -> bool:
    """Rows in [0, 1] summing to about 1 (a quantized softmax sums to 1 only roughly)."""
    return bool(z.min() >= 0 and z.max() <= 1 and np.mean(np.abs(z.sum(-1) - 1)) < 0.05)


def _probabilities(z: np.ndarray, *, logits: bool) -> np.ndarray:
    if logits:
        z = z - z.max(-1, keepdims=True)
        p = np.exp(z)
    else:
        p = np.clip(z, 0, None)
    p = np.clip(p / np.maximum(p.sum(-1, keepdims=True), 1e-300), 1e-12, None)
    return p / p.sum(-1, keepdims=True)


def fidelity(baseline: np.ndarray, candidate: np.ndarray, *, name: str) -> Fidelity:
    """Argmax agreement, output RMSE and KL(baseline || candidate) of two outputs.

    Raises:
        EvaluationError: the outputs' shapes differ.
    """
    if baseline.shape != candidate.shape:
        raise EvaluationError(
            f"Candidate {name!r} must have the baseline's output shape to be compared "
            f"with it. Expected: {baseline.shape}. Received: {candidate.shape}. Compare "
            "models of the same task, or choose another baseline."
        )
    a, b = np.asarray(baseline, np.float64), np.asarray(candidate, np.float64)
    rmse_value = float(np.sqrt(np.mean((a - b) ** 2)))
    if a.ndim < 2 or a.shape[-1] < 2:
        return Fidelity(argmax_agreement=None, output_rmse=rmse_value, kl_divergence=None)
    # The baseline decides how both are read, so a float softmax and its int8
    # copy (whose rows sum to 1 only roughly) are compared like for like.
    logits = not _are_probabilities(a)
    p, q = _probabilities(a, logits=logits), _probabilities(b, logits=logits)
    kl = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))
    agreement = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    return Fidelity(argmax_agreement=agreement, output_rmse=rmse_value,
                    kl_divergence=max(kl, 0.0))
