"""kill -9 during `kmot optimize` and `kmot convert`, at seeded points (tests/faults.py).

After each kill the previous outputs are intact (an output file holds its old
bytes or the complete new ones, no ``.part`` file stands where an output should
be, every step record matches the model saved before it), and the next run
succeeds: `optimize` resumes from the steps that were complete. Temporary
folders a killed run leaves are named after its (dead) pid, so they can be swept.

Each command imports TensorFlow (5-10 s), so the kills are few: `KILLS` per
command, one of the `optimize` ones placed inside the step's ``model.save`` (the
window a random point rarely hits, where a save in place left a torn file that
wedged the next run). Replay a failure with the seed and offset in its message.
"""

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from faults import CLI, COUNTS, cli_env, kill_points, run_cli, run_killed, timed_run

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


SPARSITY = {"old.yaml": 0.3, "new.yaml": 0.6}


def sparsity_of(content: bytes) -> float | None:
    """The least sparsity of a LiteRT file's kernels, None if it is not a whole file."""
    try:
        weights = inspect(content).weights
    except Exception:  # noqa: BLE001 - a torn file fails in many ways
        return None
    return min(w.sparsity for w in weights if not w.is_bias)


def reusable(steps, recipe: str) -> bool:
    """Whether the step on disk is complete and from ``recipe`` (its record names the
    model file's sha256 and the step's options)."""
    record, model = steps / "00_prune.json", steps / "00_prune.keras"
    try:
        saved = json.loads(record.read_text())
        return (saved["sha256"] == sha256_file(model)
                and saved["step"]["final_sparsity"] == SPARSITY[recipe])
    except (OSError, ValueError, KeyError):
        return False


def kill_when(args, condition, *, env, timeout=120) -> bool:
    """Starts ``kmot ARGS`` and sends SIGKILL as soon as ``condition()`` holds."""
    proc = subprocess.Popen([*CLI, *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if condition():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                COUNTS["kills"] += 1
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def saving_step(steps):
    """True once the step model starts being written: a temporary file beside it, or
    (a writer that saves in place) the file itself changed."""
    model = steps / "00_prune.keras"
    before = _signature(model)

    def started() -> bool:
        return any(steps.glob(".00_prune.keras.*")) or _signature(model) != before

    return started


def _signature(path):
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def optimize_trial(files, env, previous, out, kill, then: str) -> list[str]:
    """Kills ``optimize new.yaml`` over a copy of ``previous`` (made by old.yaml), checks
    what is left, runs ``then`` (the killed recipe again, or back to the old one)."""
    def args(name):
        return ["optimize", files / "base.keras", "--recipe", files / name, "--data",
                files / "train.npz", "--val", files / "val.npz", "--out", out]

    shutil.copytree(previous, out)
    old = {name: (previous / name).read_bytes() for name in ("model.tflite", "baseline.tflite")}
    kill(args("new.yaml"), out)
    problems = visible_parts(out) + [f"{name} is gone" for name in old if not (out / name).is_file()]
    after = {name: (out / name).read_bytes() for name in old if (out / name).is_file()}
    if after.get("baseline.tflite", old["baseline.tflite"]) != old["baseline.tflite"]:
        problems.append("baseline.tflite changed")  # the same baseline converts the same
    model = after.get("model.tflite", old["model.tflite"])
    if model != old["model.tflite"] and (sparsity_of(model) or 0) < 0.55:
        problems.append("model.tflite is neither the old file nor a whole new one")
    complete = reusable(out / "steps", then)
    rerun = run_cli(args(then), env=env)
    if rerun.returncode != 0:
        failed = f"the next run ({then}) failed: {rerun.stdout[-600:]} {rerun.stderr[-600:]}"
        return [*problems, failed]
    if f"steps: 1 ({int(complete)} reused)" not in rerun.stdout:
        problems.append(f"expected the next run to reuse {int(complete)} step(s); it "
                        f"printed {rerun.stdout.strip()[-200:]!r}")
    final = sparsity_of((out / "model.tflite").read_bytes())
    if final is None or abs(final - SPARSITY[then]) > 0.05:
        problems.append(f"the next run's model.tflite has sparsity {final}, not that of {then}")
    return problems + [str(p) for p in out.rglob("*.part*")]  # swept by the next run


def test_kill_during_optimize(files, tmp_path, env):
    previous = tmp_path / "previous"
    result, duration = timed_run(
        ["optimize", files / "base.keras", "--recipe", files / "old.yaml", "--data",
         files / "train.npz", "--val", files / "val.npz", "--out", previous], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    delays = kill_points(SEED, KILLS - 1, END * duration, start=START * duration)
    trials = [(f"at {delay:.2f}s (seed {SEED})",
               lambda args, out, delay=delay: run_killed(args, delay, env=env))
              for delay in delays]
    # and once inside the step's model.save, which random points rarely hit
    trials.append(("while the step model is saved",
                   lambda args, out: kill_when(args, saving_step(out / "steps"), env=env)))
    for i, (where, kill) in enumerate(trials):
        then = "old.yaml" if i % 2 else "new.yaml"  # resume the killed recipe, or go back
        problems = optimize_trial(files, env, previous, tmp_path / f"kill{i}", kill, then)
        if problems:
            COUNTS["failures"] += 1
        assert not problems, f"kill {where}, then {then}: {problems}"
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
