"""The error profile of a candidate against the baseline: where the accuracy went.

For a classifier: accuracy per class (baseline, candidate, delta), the change in
the confusion matrix, the samples whose prediction changed (and which of them the
candidate broke or fixed), a paired bootstrap 95% interval on the accuracy delta,
and McNemar's exact test on the discordant pairs (is the candidate's accuracy
different, or is it one-image noise?). For a regression output: the mean absolute
error per output column, baseline and candidate.
"""

from __future__ import annotations

import numpy as np

from kmot.evaluate.schema import ClassDelta, ErrorProfile, OutputDelta

__all__ = ["error_profile", "bootstrap_interval", "mcnemar_p"]

#: Resamples of the paired bootstrap; fixed seed, so a report is reproducible.
BOOTSTRAP_RESAMPLES = 2000
_SEED = 0


def bootstrap_interval(baseline_correct: np.ndarray, candidate_correct: np.ndarray, *,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """A percentile interval on mean(candidate_correct - baseline_correct), resampling
    samples (pairs stay together: both models are scored on the same draw)."""
    diff = candidate_correct.astype(np.int8) - baseline_correct.astype(np.int8)
    n = len(diff)
    if n == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory for large validation sets
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        draws = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_p(fixed: int, broken: int) -> float:
    """McNemar's exact test: two-sided binomial p-value of the discordant pairs
    (``fixed``: baseline wrong, candidate right; ``broken``: the reverse)."""
    total = fixed + broken
    if total == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(fixed, broken), total, 0.5).pvalue)


def _labels(y: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """Integer class labels from ``y`` (labels, or one-hot rows like the output)."""
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0) \
            and y.min(initial=0) >= 0:  # labels stored as floats
        return y.astype(np.int64)
    if y.ndim == 2 and y.shape == out.shape and np.isin(y, (0, 1)).all() \
            and (y.sum(-1) == 1).all():  # one-hot rows
        return y.argmax(-1).astype(np.int64)
    return None


def error_profile(y, baseline: np.ndarray, candidate: np.ndarray) -> ErrorProfile | None:
    """The candidate's error profile against the baseline, on labels ``y``.

    Returns:
        An `ErrorProfile` (classification when the outputs have a class axis and
        ``y`` holds labels or one-hot rows; regression when ``y`` has the outputs'
        shape), or None when neither applies.
    """
    if y is None:
        return None
    y = np.asarray(y)
    a, b = np.asarray(baseline), np.asarray(candidate)
    labels = _labels(y, a) if a.ndim == 2 and a.shape[-1] >= 2 else None
    if labels is not None and len(labels) == len(a) and labels.min(initial=0) >= 0:
        return _classification(labels, a.argmax(-1), b.argmax(-1), a.shape[-1])
    if y.shape == a.shape and np.issubdtype(y.dtype, np.floating):
        cols = y.reshape(len(y), -1)
        base_mae = np.abs(a.reshape(len(y), -1) - cols).mean(0)
        cand_mae = np.abs(b.reshape(len(y), -1) - cols).mean(0)
        return ErrorProfile(kind="regression", per_output=[
            OutputDelta(index=i, baseline_mae=float(m0), mae=float(m1), delta=float(m1 - m0))
            for i, (m0, m1) in enumerate(zip(base_mae, cand_mae))])
    return None


def _classification(y: np.ndarray, base: np.ndarray, cand: np.ndarray,
                    classes: int) -> ErrorProfile:
    k = max(classes, int(y.max()) + 1 if len(y) else 0)
    base_ok, cand_ok = base == y, cand == y
    per_class = []
    for c in range(k):
        rows = y == c
        support = int(rows.sum())
        if support == 0:
            continue
        b_acc, c_acc = float(base_ok[rows].mean()), float(cand_ok[rows].mean())
        per_class.append(ClassDelta(label=c, support=support, baseline_accuracy=b_acc,
                                    accuracy=c_acc, delta=c_acc - b_acc))

    def confusion(pred):
        m = np.zeros((k, k), np.int64)
        np.add.at(m, (y, np.clip(pred, 0, k - 1)), 1)
        return m

    fixed = np.flatnonzero(~base_ok & cand_ok)
    broken = np.flatnonzero(base_ok & ~cand_ok)
    low, high = bootstrap_interval(base_ok, cand_ok)
    return ErrorProfile(
        kind="classification", per_class=per_class,
        confusion_delta=(confusion(cand) - confusion(base)).tolist(),
        changed=np.flatnonzero(base != cand).tolist(), fixed=fixed.tolist(),
        broken=broken.tolist(), accuracy_delta=float(cand_ok.mean() - base_ok.mean()),
        delta_ci95=(low, high), mcnemar_p=mcnemar_p(len(fixed), len(broken)))
