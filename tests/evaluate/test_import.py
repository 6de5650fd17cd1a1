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
