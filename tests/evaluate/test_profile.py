"""The error profile: per-class deltas, changed samples, bootstrap interval, McNemar."""

import numpy as np
import pytest

from kmot.evaluate import compare, gate
from kmot.evaluate.profile import bootstrap_interval, error_profile, mcnemar_p


def _onehot(labels, k=4):
    return np.eye(k)[labels]


def test_profile_parts_agree_with_each_other():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 500)
    base = np.where(rng.random(500) < 0.9, y, rng.integers(0, 4, 500))
    cand = np.where(rng.random(500) < 0.85, y, rng.integers(0, 4, 500))
    p = error_profile(y, _onehot(base), _onehot(cand))
    assert p.kind == "classification"
    assert p.accuracy_delta == pytest.approx(np.mean(cand == y) - np.mean(base == y))
    # per-class deltas, weighted by support, add up to the overall delta
    assert sum(c.support * c.delta for c in p.per_class) / len(y) == pytest.approx(
        p.accuracy_delta)
    assert p.changed == np.flatnonzero(base != cand).tolist()
    assert set(p.fixed) | set(p.broken) <= set(p.changed)
    assert p.fixed == np.flatnonzero((base != y) & (cand == y)).tolist()
    assert p.broken == np.flatnonzero((base == y) & (cand != y)).tolist()
    delta = np.array(p.confusion_delta)
    assert delta.sum() == 0 and (delta.sum(axis=1) == 0).all()  # rows: same true labels
    assert np.trace(delta) == np.sum(cand == y) - np.sum(base == y)
    low, high = p.delta_ci95
    assert low <= p.accuracy_delta <= high


def test_regression_outputs_get_per_output_errors():
    y = np.linspace(0, 1, 40, dtype="float32").reshape(20, 2)
    p = error_profile(y, y + 0.1, y - 0.3)
    assert p.kind == "regression" and len(p.per_output) == 2
    assert p.per_output[0].baseline_mae == pytest.approx(0.1)
    assert p.per_output[1].delta == pytest.approx(0.2)


def test_mcnemar_matches_a_reference_table():
    # b=1, c=8 discordant pairs: the exact two-sided p is 2 * P(X <= 1 | n=9, 1/2)
    # = 2 * (1 + 9) / 512 = 0.0390625 (McNemar 1947; e.g. Fagerland et al. 2013).
    assert mcnemar_p(1, 8) == pytest.approx(0.0390625)
    assert mcnemar_p(8, 1) == pytest.approx(0.0390625)
    assert mcnemar_p(5, 5) == pytest.approx(1.0)
    assert mcnemar_p(0, 0) == 1.0


def test_bootstrap_interval_covers_the_true_delta_in_simulation():
    """95% intervals from 200 simulated validation sets cover the true delta ~95% of
    the time (here: at least 90%, a bound that fails for a broken interval)."""
    rng = np.random.default_rng(7)
    true_base, true_cand, n = 0.90, 0.87, 400
    covered = 0
    trials = 200
    for t in range(trials):
        base = rng.random(n) < true_base
        cand = np.where(rng.random(n) < 0.8, base, rng.random(n) < true_cand)
        # the candidate agrees with the baseline 80% of the time, so they are paired
        true_delta = 0.8 * true_base + 0.2 * true_cand - true_base
        low, high = bootstrap_interval(base, cand, resamples=500, seed=t)
        covered += low <= true_delta <= high
    assert covered / trials >= 0.90, covered / trials


def test_report_and_gate_use_the_profile(files, val):
    report = compare({"float": files / "float.tflite", "int8": files / "int8.tflite"}, val,
                     runs=3, warmup=0, memory=False)
    p = report.candidate("int8").error_profile
    assert report.candidate("float").error_profile is None and p is not None
    assert p.accuracy_delta == pytest.approx(report.candidate("int8").metric_deltas["accuracy"])
    worst = 0.0 - p.delta_ci95[0]
    assert gate(report, {"max_accuracy_drop_ci": worst + 0.001}).passed
    failed = gate(report, {"max_accuracy_drop_ci": max(worst - 0.001, 0.0)})
    assert failed.passed is (worst - 0.001 < 0 and worst <= 0)
    text = report.to_markdown()
    assert "## Error profile" in text and "| int8 |" in text.split("## Error profile")[1]
