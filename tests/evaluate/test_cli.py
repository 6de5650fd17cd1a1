"""`kmot bench` and `kmot gate`, run in-process on real files."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kmot.cli import app
from kmot.evaluate import Report

runner = CliRunner()


@pytest.fixture(scope="module")
def bench_dir(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = runner.invoke(app, ["bench", str(files / "float.tflite"), str(files / "int8.tflite"),
                                 "--data", str(files / "val.npz"), "--out", str(out),
                                 "--runs", "20", "--metric", "accuracy", "--metric", "top3",
                                 "--no-memory"])
    assert result.exit_code == 0, result.output
    assert "quality on 120 samples vs baseline 'float'" in result.output
    assert f"wrote {out / 'report.json'}" in result.output
    return out


def test_bench_writes_every_report_file(bench_dir):
    assert {p.name for p in bench_dir.iterdir()} == {"report.json", "report.md", "report.html"}
    report = Report.load(bench_dir)
    assert report.names == ["float", "int8"]
    assert [m.name for m in report.metrics] == ["accuracy", "top3"]
    assert report.settings.runs == 20 and report.settings.memory is False


def test_bench_rejects_data_that_does_not_fit(files, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 28, 28, 1), "float32"), y=np.zeros(4))
    result = runner.invoke(app, ["bench", str(files / "int8.tflite"), "--data",
                                 str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "error:" in result.output and "Validation data does not fit input" in result.output
    assert "Received: shape (4, 28, 28, 1)" in result.output
    assert not (tmp_path / "out").exists()


def test_gate_that_must_pass_exits_zero(bench_dir, tmp_path):
    budgets = tmp_path / "ok.yaml"
    budgets.write_text("max_accuracy_drop: 0.5\nmax_p99_ms: 10000\nmax_gzip_bytes: 100000000\n")
    result = runner.invoke(app, ["gate", str(bench_dir / "report.json"), "--budgets", str(budgets)])
    assert result.exit_code == 0, result.output
    assert "gate PASSED: 3 of 3 checks pass" in result.output


def test_gate_that_must_fail_exits_non_zero_and_shows_what_failed(bench_dir, tmp_path):
    size = Report.load(bench_dir).candidate("int8").size.bytes
    budgets = tmp_path / "tight.yaml"
    budgets.write_text(f"max_accuracy_drop: 0.5\nmax_bytes: {size // 2}\n")
    result = runner.invoke(app, ["gate", str(bench_dir), "--budgets", str(budgets)])
    assert result.exit_code == 1, result.output
    assert "gate FAILED: 1 of 2 checks pass" in result.output
    assert f"FAIL int8 max_bytes: file size {size:,} bytes > {size // 2:,} bytes" in result.output


def test_gate_json_output(bench_dir, tmp_path):
    budgets = tmp_path / "b.yaml"
    budgets.write_text("max_p50_ms: 0.000001\n")
    result = runner.invoke(app, ["gate", str(bench_dir), "--budgets", str(budgets), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["passed"] is False and data["checks"][0]["budget"] == "max_p50_ms"


def test_malformed_budgets_file_exits_two_with_a_clear_error(bench_dir, tmp_path):
    budgets = tmp_path / "bad.yaml"
    budgets.write_text("max_accuracy_drop: 0.01\nmax_p95_ms: 3\n")
    result = runner.invoke(app, ["gate", str(bench_dir), "--budgets", str(budgets)])
    assert result.exit_code == 2
    assert "error:" in result.output and "unknown budget 'max_p95_ms'" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_p50_ms: [5\n")
    result = runner.invoke(app, ["gate", str(bench_dir), "--budgets", str(broken)])
    assert result.exit_code == 2 and "to be valid YAML" in result.output


def test_gate_on_a_missing_report_exits_two(tmp_path):
    (tmp_path / "b.yaml").write_text("max_p50_ms: 1\n")
    result = runner.invoke(app, ["gate", str(tmp_path / "none.json"), "--budgets",
                                 str(tmp_path / "b.yaml")])
    assert result.exit_code == 2 and "No such report" in result.output
