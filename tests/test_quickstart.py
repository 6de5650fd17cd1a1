"""docs/quickstart.md runs as pasted: its Python block, then its shell blocks, in order,
in an empty folder, with nothing added; then what it promises is checked."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"


def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(python|bash)\n(.*?)```", text, re.S)


@pytest.mark.slow
def test_quickstart_runs_as_pasted(tmp_path):
    found = blocks(PAGE.read_text())
    assert [kind for kind, _ in found] == ["python", "bash", "bash", "bash", "bash"]
    # `kmot` as installed next to this interpreter; HOME empty so no user config or
    # default registry is read or written.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path / "home"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("KMOT_REGISTRY", None)
    work = tmp_path / "work"
    work.mkdir()
    for index, (kind, code) in enumerate(found):
        command = ([sys.executable, "-I", "-c", code] if kind == "python"
                   else ["bash", "-e", "-o", "pipefail", "-c", code])
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (f"block {index} ({kind}) failed:\n{code}\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    # Step 3 pushed v1, the recipe v2; v2 is production and pulled back intact.
    from kmot._files import sha256_file
    from kmot.registry import Registry

    registry = Registry(work / "registry")
    versions = registry.list("digits")
    assert [v.version for v in versions] == [1, 2]
    assert registry.current("digits").version == 2
    assert sha256_file(work / "production.tflite") == versions[1].sha256
    assert sha256_file(work / "model_int8.tflite") == versions[0].sha256

    record = json.loads((work / "kmot-out" / "report" / "report.json").read_text())
    made = next(c for c in record["candidates"] if c["name"] == "digits_qat")["provenance"]
    assert made["recipe"] == "digits_qat" and made["export"] == "int8"
    assert [s["technique"] for s in made["steps"]] == ["quantize"]
    assert made["source_sha256"] == sha256_file(work / "model.keras")
    assert record["gate"]["passed"] is True
    assert [(r["name"], r["version"], r["stage"]) for r in record["registrations"]] == [
        ("digits", 2, "production")]
    page = (work / "kmot-out" / "report" / "report.html").read_text()
    assert "digits v2</b> (production)" in page and "digits_qat: accuracy " in page


def test_a_failing_block_fails_the_run(tmp_path):
    """The check can fail: `bash -e` stops at the first failing command."""
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", "true\nfalse\necho after"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1 and "after" not in done.stdout
