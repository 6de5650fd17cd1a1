"""The README's Python examples run, in order, as a user pastes them.

They run in a fresh interpreter started in an empty folder, one namespace shared
by all blocks and nothing put in it beforehand: a block that uses a name no
earlier block defined fails here exactly as it fails for a user.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

_DRIVER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for index, block in enumerate(blocks):
    try:
        exec(compile(block, f"README block {index}", "exec"), namespace)
    except BaseException:
        print(f"README python block {index} failed:\\n{traceback.format_exc(limit=-3)}\\n{block}")
        sys.exit(1)
print(f"ran {len(blocks)} blocks")
"""


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.slow
def test_readme_python_examples_run_as_pasted(tmp_path):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 6
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    result = subprocess.run([sys.executable, "-I", "-c", _DRIVER, "blocks.json"], cwd=tmp_path,
                            capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"ran {len(blocks)} blocks" in result.stdout


def test_a_block_using_an_undefined_name_fails_the_driver(tmp_path):
    """The check can fail: a block that relies on a name nothing defined is caught."""
    (tmp_path / "blocks.json").write_text(json.dumps(["x = 1\n", "print(loss)\n"]))
    result = subprocess.run([sys.executable, "-I", "-c", _DRIVER, "blocks.json"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "block 1 failed" in result.stdout and "NameError" in result.stdout
