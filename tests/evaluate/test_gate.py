"""Budgets (dict or YAML) and `gate`: every check with value, limit and verdict."""

import numpy as np
import pytest

from kmot.errors import BudgetError, ReportError
from kmot.evaluate import Budgets, gate, load_budgets


def test_every_budget_is_checked_with_value_and_limit(report):
    int8 = report.candidate("int8")
    budgets = {"max_accuracy_drop": 0.5, "min_accuracy": 0.5, "max_p50_ms": 1000,
               "max_p90_ms": 1000, "max_p99_ms": 1000, "max_latency_ratio": 100,
               "max_bytes": 10**8, "max_gzip_bytes": 10**8, "min_argmax_agreement": 0.5,
               "max_kl_divergence": 1.0}
    result = gate(report, budgets)
    assert result.passed and not result.failures
    assert [c.budget for c in result.checks] == list(budgets)
    assert {c.candidate for c in result.checks} == {"int8"}  # the baseline is not gated
    by = {c.budget: c for c in result.checks}
    assert by["max_p90_ms"].value == int8.latency.p90_ms and by["max_p90_ms"].limit == 1000
    assert by["max_bytes"].value == int8.size.bytes
    assert by["min_accuracy"].value == int8.metrics["accuracy"]
    assert by["max_accuracy_drop"].value == pytest.approx(-int8.metric_deltas["accuracy"])
    assert by["min_argmax_agreement"].value == int8.fidelity.argmax_agreement
    assert result.to_dict()["passed"] is True and len(result.to_dict()["checks"]) == 10


def test_a_budget_that_must_fail(report):
    int8 = report.candidate("int8")
    result = gate(report, {"max_bytes": int8.size.bytes - 1, "max_gzip_bytes": 10**8})
    assert not result.passed
    [failed] = result.failures
    assert failed.budget == "max_bytes" and failed.value == int8.size.bytes
    assert failed.detail == f"file size {int8.size.bytes:,} bytes > {int8.size.bytes - 1:,} bytes"


def test_a_limit_met_exactly_passes_despite_float_noise(report):
    int8 = report.candidate("int8")
    drop = 0.0 - int8.metric_deltas["accuracy"]
    assert gate(report, {"max_accuracy_drop": max(drop, 0.0),
                         "min_accuracy": int8.metrics["accuracy"]}).passed


def test_unmeasured_memory_fails_with_a_reason(report):
    result = gate(report, {"max_peak_memory_mb": 1000})
    [check] = result.checks
    assert not check.passed and check.value is None
    assert "peak memory not measured (run compare with memory=True, or kmot bench" in check.detail


def test_missing_metric_fails_with_a_reason(report):
    [check] = gate(report, {"metric": "top5", "min_accuracy": 0.1}).checks
    assert not check.passed and "metric 'top5' not in the report" in check.detail


def test_choose_the_candidate(report):
    checks = gate(report, {"max_p50_ms": 1000}, candidate="float").checks
    assert [c.candidate for c in checks] == ["float"]
    with pytest.raises(BudgetError, match=r"Expected candidate to name one in the report: "
                       r"\['float', 'int8'\]. Received: candidate='fp16'"):
        gate(report, {"max_p50_ms": 1}, candidate="fp16")


def test_gate_reads_a_report_file(report, tmp_path):
    report.save(tmp_path)
    assert gate(tmp_path / "report.json", {"max_p50_ms": 1000}).passed
    with pytest.raises(ReportError, match=r"No such report"):
        gate(tmp_path / "other.json", {"max_p50_ms": 1000})


def test_yaml_budgets(tmp_path):
    path = tmp_path / "budgets.yaml"
    path.write_text("# CI budgets\nmax_accuracy_drop: 0.01\nmax_p90_ms: 5\nmax_bytes: 2000000\n")
    budgets = load_budgets(path)
    assert budgets == Budgets(max_accuracy_drop=0.01, max_p90_ms=5.0, max_bytes=2_000_000)
    assert load_budgets(str(path)) == budgets and load_budgets(budgets) is budgets


def test_unknown_budget_names_the_key_and_the_valid_ones():
    with pytest.raises(BudgetError, match=r"unknown budget 'max_p95_ms' \(expected one of: metric, "
                       r"max_accuracy_drop, .*max_kl_divergence\); Received: max_p95_ms=3"):
        load_budgets({"max_p95_ms": 3})


@pytest.mark.parametrize("key, value, says", [
    ("max_p50_ms", "fast", "valid number"),
    ("max_bytes", 1.5, "valid integer"),
    ("max_bytes", "1e6", "valid integer"),
    ("max_p90_ms", -1, "greater than 0"),
    ("min_argmax_agreement", 1.5, "less than or equal to 1"),
    ("max_accuracy_drop", True, "valid number"),
])
def test_wrong_type_or_range_names_the_field(key, value, says):
    with pytest.raises(BudgetError, match=rf"budget '{key}': .*{says}.*Received: {key}="):
        load_budgets({key: value})


def test_malformed_budget_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_p50_ms: 5\n  max_p90_ms: [1\n")
    with pytest.raises(BudgetError, match=r"Expected .*bad.yaml to be valid YAML. Received: a "
                       r"parse error at line 2"):
        load_budgets(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- max_p50_ms: 5\n")
    with pytest.raises(BudgetError, match=r"to hold a mapping of budget names to limits.*"
                       r"Received: list"):
        load_budgets(listing)
    with pytest.raises(BudgetError, match=r"No such budgets file"):
        load_budgets(tmp_path / "missing.yaml")
    with pytest.raises(BudgetError, match=r"Expected budgets as a dict.*Received: int"):
        load_budgets(5)


def test_budgets_that_set_nothing_are_an_error(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(BudgetError, match=r"Received: NoneType"):
        load_budgets(empty)
    with pytest.raises(BudgetError, match=r"sets no budget, so a gate could never fail"):
        load_budgets({"metric": "accuracy"})


def test_min_accuracy_on_an_error_metric_is_refused(files, val):
    from kmot.evaluate import compare

    def error_rate(y_true, y_pred):
        return float(np.mean(y_pred.argmax(-1) != y_true))

    error_rate.higher_is_better = False
    report = compare([files / "float.tflite", files / "int8.tflite"], val,
                     metrics=[error_rate], runs=2, memory=False)
    with pytest.raises(BudgetError, match=r"min_accuracy needs a higher-is-better metric. "
                       r"Received: metric='error_rate'"):
        gate(report, {"metric": "error_rate", "min_accuracy": 0.1})
    # For an error measure, the drop is the increase of the error.
    [check] = gate(report, {"metric": "error_rate", "max_accuracy_drop": 1.0}).checks
    assert check.value == pytest.approx(report.candidate("int8").metric_deltas["error_rate"])
