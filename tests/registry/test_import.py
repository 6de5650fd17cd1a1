"""`kmot.registry` only handles files: it never loads TensorFlow, Keras or LiteRT."""

import hashlib
import json
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


def test_registry_commands_do_not_load_tensorflow(tmp_path, cli_fresh):
    """The real `kmot` entry point, in a fresh process: push, list, show, promote,
    rollback, history, pull, verify and gc read and write files, so Keras, TensorFlow
    and LiteRT stay unloaded."""
    for i in (1, 2):
        (tmp_path / f"model_{i}.tflite").write_bytes(f"weights {i}".encode() * 50)
    (tmp_path / "report.json").write_text(json.dumps({"accuracy": 0.97}))
    root = ["--root", str(tmp_path / "registry")]
    commands = [
        ["push", str(tmp_path / "model_1.tflite"), "--name", "digits", "--report",
         str(tmp_path / "report.json"), "--tag", "int8", "--promote"],
        ["push", str(tmp_path / "model_2.tflite"), "--name", "digits", "--json"],
        ["promote", "digits", "2"],
        ["rollback", "digits"],
        ["list"],
        ["list", "digits", "--json"],
        ["show", "digits", "1", "--json"],
        ["history", "digits"],
        ["pull", "digits", "-o", str(tmp_path / "deploy" / "model.tflite")],
        ["verify"],
        ["gc", "--dry-run"],
    ]
    summary = cli_fresh([['kmot', 'registry', *c, *root] for c in commands])
    assert summary["heavy"] == []
    assert [c for c, _ in summary["runs"]] == [0] * len(commands), summary["runs"]
    out = dict(zip((" ".join(c[:2]) for c in commands), (o for _, o in summary["runs"])))
    assert "pushed digits v1" in out[f"push {tmp_path / 'model_1.tflite'}"]
    assert json.loads(out[f"push {tmp_path / 'model_2.tflite'}"])["version"] == 2
    assert "digits v2 is production" in out["promote digits"]
    assert "rolled back: digits v1 is production again" in out["rollback digits"]
    assert "digits" in out["list"] and "v1" in out["list"]
    listed = json.loads(out["list digits"])
    assert [(v["version"], v["production"]) for v in listed] == [(1, True), (2, False)]
    pulled = (tmp_path / "deploy" / "model.tflite").read_bytes()
    assert pulled == (tmp_path / "model_1.tflite").read_bytes()
    assert "sha256 verified" in out["pull digits"]
    shown = json.loads(out["show digits"])
    assert shown["sha256"] == hashlib.sha256(pulled).hexdigest()
    assert shown["tags"] == ["int8"] and shown["metrics"] == {"accuracy": 0.97}
    assert "promote" in out["history digits"] and "rollback" in out["history digits"]
    assert "verified 2 objects (2 versions" in out["verify"]
    assert "would remove 0 unreferenced objects" in out["gc --dry-run"]
