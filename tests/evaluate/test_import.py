"""`import kmot.evaluate` stays light: runtimes and plotting load on first use."""

import subprocess
import sys


def test_import_does_not_load_tensorflow_litert_or_matplotlib():
    code = ("import sys, kmot.evaluate; heavy = [m for m in ('tensorflow', 'keras', "
            "'ai_edge_litert', 'matplotlib') if m in sys.modules]; print(heavy); "
            "sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gate_a_saved_report_without_tensorflow(report, tmp_path):
    report.save(tmp_path)
    code = (f"import sys; from kmot.evaluate import gate; "
            f"r = gate({str(tmp_path)!r}, {{'max_p50_ms': 1e6}}); "
            "heavy = [m for m in ('tensorflow', 'keras', 'ai_edge_litert') if m in sys.modules]; "
            "print(r.passed, heavy); sys.exit(0 if r.passed and not heavy else 1)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gate_command_does_not_load_tensorflow(report, tmp_path, cli_fresh):
    """The real `kmot gate` entry point, in a fresh process, on a saved report."""
    report.save(tmp_path / "report")
    size = report.candidate("int8").size.bytes
    (tmp_path / "ok.yaml").write_text("max_accuracy_drop: 0.5\nmax_p99_ms: 10000\n")
    (tmp_path / "tight.yaml").write_text(f"max_accuracy_drop: 0.5\nmax_bytes: {size // 2}\n")
    commands = [["kmot", "gate", str(tmp_path / "report" / "report.json"), "--budgets",
                 str(tmp_path / budgets)] for budgets in ("ok.yaml", "tight.yaml")]
    summary = cli_fresh(commands)
    assert summary["heavy"] == []
    (passed, passed_out), (failed, failed_out) = summary["runs"]
    assert passed == 0 and "gate PASSED: 2 of 2 checks pass" in passed_out, passed_out
    assert failed == 1 and "gate FAILED: 1 of 2 checks pass" in failed_out, failed_out
    assert f"FAIL int8 max_bytes: file size {size:,} bytes > {size // 2:,} bytes" in failed_out
