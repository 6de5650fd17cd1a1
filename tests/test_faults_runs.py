"""kill -9 during `kmot optimize` and `kmot convert`, at seeded points (tests/faults.py).

After each kill the previous outputs are intact (an output file holds its old
bytes or the complete new ones, no ``.part`` file stands where an output should
be, every step record matches the model saved before it), and the next run
succeeds: `optimize` resumes from the steps that were complete. Temporary
folders a killed run leaves are named after its (dead) pid, so they can be swept.

Each command imports TensorFlow (5-10 s), so the kills are few: `KILLS` per
command. Replay a failure with the seed and the offset in its message.
"""

import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from faults import COUNTS, cli_env, kill_points, run_cli, run_killed, timed_run

from kmot import _tempdirs
from kmot._files import sha256_file
from kmot.export import inspect, to_litert

pytestmark = pytest.mark.slow

SEED = 13
KILLS = 4
# Kill points fall in [START, END) of an uninterrupted run's duration: before, the
# interpreter imports TensorFlow; after, it tears it down; neither touches a file.
START, END = 0.25, 0.9


def recipe(sparsity: float) -> dict:
    return {"name": "tiny", "training": {"epochs": 1, "batch_size": 64},
            "steps": [{"prune": {"final_sparsity": sparsity}}], "evaluate": None}


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_data):
    folder = tmp_path_factory.mktemp("faults")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)])
    model.save(folder / "base.keras")
    to_litert(model, folder / "float.tflite")
    x, y, x_val, y_val = digits_data
    np.savez(folder / "train.npz", x=x[:256], y=y[:256])
    np.savez(folder / "val.npz", x=x_val[:64], y=y_val[:64])
    (folder / "old.yaml").write_text(json.dumps(recipe(0.3)))
    (folder / "new.yaml").write_text(json.dumps(recipe(0.6)))
    return folder


@pytest.fixture
def env(tmp_path):
    """The commands' environment, with a temporary folder of their own."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return cli_env(TMPDIR=str(tmp))


def visible_parts(folder) -> list[str]:
    """Temporary files standing where outputs are: any ``.part`` not hidden."""
    return [str(p) for p in folder.rglob("*.part*") if not p.name.startswith(".")]


def check_temp_folders(env) -> list[str]:
    """Problems with what killed runs left in the temporary folder; then sweeps it."""
    tmp = env["TMPDIR"]
    def left() -> list[str]:  # TensorFlow's own files (autograph's __pycache__) aside
        return sorted(p.name for p in Path(tmp).glob("kmot-*"))

    problems = [f"temporary folder {n} names no owner pid" for n in left()
                if not re.fullmatch(r"kmot-(export|evaluate)-\d+-\w+", n)]
    for purpose in ("export", "evaluate"):
        _tempdirs.remove_stale(purpose, grace=0, folder=tmp)  # every owner was killed
    return problems + [f"{name} not swept" for name in left()]


def record_problems(steps) -> tuple[list[str], bool]:
    """Whether a step's record matches the model file it follows (and so is reusable)."""
    record, model = steps / "00_prune.json", steps / "00_prune.keras"
    if not record.is_file():
        return [], False
    try:
        saved = json.loads(record.read_text())
    except ValueError:
        return [f"{record.name} is not whole JSON"], False
    if not model.is_file() or saved.get("sha256") != sha256_file(model):
        return [], False  # the old recipe's record beside a new model: re-run, not reuse
    return [], saved["step"]["final_sparsity"] == 0.6


def test_kill_during_optimize(files, tmp_path, env):
    def args(out, name):
        return ["optimize", files / "base.keras", "--recipe", files / name, "--data",
                files / "train.npz", "--val", files / "val.npz", "--out", out]

    previous = tmp_path / "previous"
    result, duration = timed_run(args(previous, "old.yaml"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    old = {name: (previous / name).read_bytes() for name in ("model.tflite", "baseline.tflite")}
    for i, delay in enumerate(kill_points(SEED, KILLS, END * duration, start=START * duration)):
        out = tmp_path / f"kill{i}"
        shutil.copytree(previous, out)
        killed = run_killed(args(out, "new.yaml"), delay, env=env)
        after = {name: (out / name).read_bytes() for name in old if (out / name).is_file()}
        problems, complete = record_problems(out / "steps")
        problems += visible_parts(out)
        problems += [f"{name} is gone" for name in old if name not in after]
        rerun = run_cli(args(out, "new.yaml"), env=env)
        if rerun.returncode != 0:
            problems.append(f"the next run failed: {rerun.stdout[-800:]} {rerun.stderr[-800:]}")
        else:
            new = {name: (out / name).read_bytes() for name in old}
            problems += [f"{name} is neither the old nor the new file" for name in after
                         if after[name] not in (old[name], new[name])]
            if f"steps: 1 ({int(complete)} reused)" not in rerun.stdout:
                problems.append(f"expected the next run to reuse {int(complete)} step(s); "
                                f"it printed {rerun.stdout.strip()[-200:]!r}")
            weights = inspect(out / "model.tflite").weights
            if min(w.sparsity for w in weights if not w.is_bias) < 0.55:
                problems.append("the next run did not apply the new recipe")
            problems += [str(p) for p in out.rglob("*.part*")]  # swept by the next run
        if problems:
            COUNTS["failures"] += 1
        assert not problems, f"kill at {delay:.2f}s (seed {SEED}, killed={killed}): {problems}"
    problems = check_temp_folders(env)
    COUNTS["failures"] += bool(problems)
    assert not problems


def test_kill_during_convert(files, tmp_path, env):
    def args(output):
        return ["convert", files / "base.keras", "-o", output, "--quantize", "dynamic"]

    result, duration = timed_run(args(tmp_path / "reference.tflite"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    new = (tmp_path / "reference.tflite").read_bytes()
    old = (files / "float.tflite").read_bytes()
    assert new != old
    for i, delay in enumerate(kill_points(SEED + 1, KILLS, END * duration, start=START * duration)):
        folder = tmp_path / f"kill{i}"
        folder.mkdir()
        target = folder / "model.tflite"
        target.write_bytes(old)
        killed = run_killed(args(target), delay, env=env)
        problems = visible_parts(folder)
        if not target.is_file():
            problems.append("the output is gone")
        elif target.read_bytes() not in (old, new):
            problems.append(f"the output is neither the old nor the new file "
                            f"({target.stat().st_size} bytes)")
        rerun = run_cli(args(target), env=env)
        if rerun.returncode != 0 or target.read_bytes() != new:
            problems.append(f"the next run failed: {rerun.stdout[-800:]} {rerun.stderr[-800:]}")
        if problems:
            COUNTS["failures"] += 1
        assert not problems, f"kill at {delay:.2f}s (seed {SEED + 1}, killed={killed}): {problems}"
    problems = check_temp_folders(env)
    COUNTS["failures"] += bool(problems)
    assert not problems
