"""`kmot.registry` only handles files: it never loads TensorFlow, Keras or LiteRT."""

import subprocess
import sys


def test_registry_works_without_loading_tensorflow(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"model")
    code = (
        "import sys\n"
        "import kmot.registry\n"
        f"registry = kmot.registry.Registry({str(tmp_path / 'registry')!r})\n"
        f"v = registry.push({str(tmp_path / 'm.tflite')!r}, name='m', report={{'accuracy': 1.0}})\n"
        "registry.promote('m', v.version)\n"
        f"registry.pull('m', dest={str(tmp_path / 'out.tflite')!r})\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'ai_edge_litert', 'numpy')\n"
        "         if m in sys.modules]\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out.tflite").read_bytes() == b"model"
