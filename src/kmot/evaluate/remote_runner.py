"""The program `kmot bench --remote` runs on the target machine.

Self-contained: the standard library, numpy and ai-edge-litert only, never kmot,
so a bare device with ``pip install ai-edge-litert`` runs it (Python 3.8 or
newer). `kmot.evaluate.remote` sends it with the models, their input batches and
`kmot.evaluate.memory`'s child program in one tar on the ssh connection's stdin.

Usage: ``python3 -I remote_runner.py FOLDER`` where FOLDER holds ``job.json``,
the ``.tflite`` files, one ``.npz`` of inputs per model (arrays named
``t<tensor index>``, already in the tensors' dtypes) and ``memory_child.py``.
It prints one JSON object on its last stdout line and exits 0, or prints
``{"error": ..., "message": ...}`` and exits 3.

The protocol is the local harness's (`kmot.evaluate.runners.LiteRTRunner.time`,
`kmot.evaluate.memory`): the runs, warm-up and threads come from the job, so
both sides take them from the same `compare` settings; the timed samples come
back raw, and this machine's `kmot.evaluate.latency.summarize` turns them into
percentiles for both.

- Latency: a fresh interpreter per model with `threads` threads, resized to
  the batch; inputs set once; `warmup` untimed ``invoke()`` calls, then `runs`
  calls each timed alone with ``time.perf_counter``.
- Memory (after all timing): `memory_child.py` in a child process per model and
  one idle child, exactly as `kmot.evaluate.memory` runs them locally.
"""

import json
import os
import platform
import subprocess
import sys
import time

PROTOCOL = 1
EXIT_RUNNER_ERROR = 3


def timed_ms(call, runs, warmup):
    """`warmup` untimed calls, then `runs` calls each timed alone; milliseconds."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment():
    """The machine and runtime versions, as strings."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "cpu_count": str(os.cpu_count()),
           "cpu": _cpu_model(), "hostname": platform.node()}
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return env
    for dist in ("numpy", "ai-edge-litert"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return env


def _fail(error, message):
    print(json.dumps({"protocol": PROTOCOL, "error": error, "message": message}))
    sys.stdout.flush()
    sys.exit(EXIT_RUNNER_ERROR)


def _time_model(interpreter_class, folder, entry, runs, warmup, threads):
    import numpy as np

    it = interpreter_class(model_path=os.path.join(folder, entry["file"]), num_threads=threads)
    with np.load(os.path.join(folder, entry["inputs"])) as npz:
        arrays = {int(k[1:]): npz[k] for k in npz.files}
    details = it.get_input_details()
    expected = sorted(d["index"] for d in details)
    if sorted(arrays) != expected:
        raise ValueError(f"the inputs do not match the model's input tensors {expected}")
    for d in details:
        it.resize_tensor_input(d["index"], list(arrays[d["index"]].shape), strict=False)
    it.allocate_tensors()
    for d in details:
        it.set_tensor(d["index"], arrays[d["index"]])
    return timed_ms(it.invoke, runs, warmup)


def _peak_bytes(folder, model_file, job):
    """The memory child's figure for one model ('' for the idle runtime)."""
    path = os.path.join(folder, model_file) if model_file else ""
    args = [sys.executable, "-I", os.path.join(folder, "memory_child.py"), "tflite", path,
            str(job["threads"]), str(job["memory_runs"]), str(job["batch_size"]), ""]
    done = subprocess.run(args, capture_output=True, text=True, check=False,
                          timeout=job.get("memory_timeout", 600))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"exit code {done.returncode}, {reason}"
    return int(json.loads(lines[-1])["bytes"]), None


def main(folder):
    env = environment()
    with open(os.path.join(folder, "job.json")) as f:
        job = json.load(f)
    if job.get("protocol") != PROTOCOL:
        _fail("protocol", f"this runner speaks protocol {PROTOCOL}, the job "
                          f"protocol {job.get('protocol')!r}")
    for module in ("ai_edge_litert", "numpy"):
        try:
            __import__(module)
        except ImportError as err:
            _fail("missing_module", f"{module} ({err}, Python "
                                    f"{platform.python_version()} at {sys.executable})")
    from ai_edge_litert.interpreter import Interpreter

    results = []
    for entry in job["candidates"]:
        try:
            times = _time_model(Interpreter, folder, entry, job["runs"], job["warmup"],
                                job["threads"])
        except Exception as err:  # noqa: BLE001 - any failure: the runtime's own words
            _fail("model_failed", f"{entry['name']}: {type(err).__name__}: {err}")
        results.append({"name": entry["name"], "times_ms": times})
    idle, idle_error = None, None
    if job["memory"]:  # after all timing, as locally: children never overlap a timed loop
        idle, idle_error = _peak_bytes(folder, "", job)
        for entry, result in zip(job["candidates"], results):
            peak, error = _peak_bytes(folder, entry["file"], job)
            result["peak_bytes"], result["memory_error"] = peak, error or idle_error
    print(json.dumps({"protocol": PROTOCOL, "environment": env, "idle_bytes": idle,
                      "candidates": results}))


if __name__ == "__main__":
    main(sys.argv[1])
