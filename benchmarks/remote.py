"""Does ``--remote`` measure what the local harness measures, when the remote is this machine?

An sshd started on 127.0.0.1 (`kmot.evaluate.remote_sshd`) is the "remote"; the
remote's Python is this one. Models: MobileNetV2 (random weights, 224x224) as
float32 and full int8, and the digits CNN of BENCHMARKS.md (untrained: latency
does not depend on the weights) as full int8. Prints JSON lines:

- ``remote_vs_local``: per model, `compare` with and without ``remote=``
  alternating in one process (the order flips each round): the median of each
  side's per-round p50s and their ratio, and the median of the rounds' paired ratios
  (remote / local of the same round); acceptance: the paired ratio within 10%. A control side, a
  second local `compare` in the same rounds, gives the harness's ratio to itself:
  how far apart two local measurements of the model fall on this machine.
- ``remote_memory``: net peak memory of each model, local and remote (the same
  child program runs on both sides).
- ``remote_overhead``: the wall time of one remote `compare` vs a local one
  (ssh connection, copying, the remote's process start).

    python benchmarks/remote.py [--runs 200] [--warmup 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def _models(folder: Path) -> dict[str, tuple[Path, object]]:
    """``{name: (file, validation inputs)}``; files already in `folder` are reused."""
    import numpy as np

    rng = np.random.default_rng(0)
    x_digits = rng.uniform(0, 1, size=(64, 8, 8, 1)).astype("float32")
    x_mobile = rng.uniform(-1, 1, size=(8, 224, 224, 3)).astype("float32")
    models = {"mobilenetv2_float": (folder / "mobilenetv2_float.tflite", x_mobile),
              "mobilenetv2_int8": (folder / "mobilenetv2_int8.tflite", x_mobile),
              "digits_cnn_int8": (folder / "digits_cnn_int8.tflite", x_digits)}
    if all(path.is_file() for path, _ in models.values()):
        return models
    import keras

    from kmot.export import to_litert

    keras.utils.set_random_seed(0)
    mobilenet = keras.applications.MobileNetV2(weights=None)
    calib = rng.uniform(-1, 1, size=(16, 224, 224, 3)).astype("float32")
    to_litert(mobilenet, folder / "mobilenetv2_float.tflite")
    to_litert(mobilenet, folder / "mobilenetv2_int8.tflite", quantize="int8",
              representative_data=calib)
    digits = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    to_litert(digits, folder / "digits_cnn_int8.tflite", quantize="int8",
              representative_data=x_digits)
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7, help="local/remote alternating rounds")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder to keep the converted models in and reuse (default: a "
                             "temporary one)")
    args = parser.parse_args()
    if args.models is not None:
        args.models.mkdir(parents=True, exist_ok=True)
        return run(args.models, args)
    folder = Path(tempfile.mkdtemp(prefix="kmot-remote-bench-"))
    try:
        return run(folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, args: argparse.Namespace) -> int:

    import numpy as np

    from kmot.evaluate import compare
    from kmot.evaluate.remote import Remote
    from kmot.evaluate.remote_sshd import local_sshd

    start = time.perf_counter()
    models = _models(folder)
    emit({"benchmark": "remote_setup", "convert_s": round(time.perf_counter() - start, 1),
          "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds, "threads": 1,
          "cpu_count": os.cpu_count(),
          "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()]})
    settings = {"runs": args.runs, "warmup": args.warmup, "threads": 1, "progress": False}
    passed = True
    sshd_folder = Path(tempfile.mkdtemp(prefix="kmot-remote-sshd-"))
    with local_sshd(sshd_folder) as server:
        remote = Remote(server.target, identity=server.identity,
                        known_hosts=server.known_hosts, python=sys.executable)
        for name, (path, x) in models.items():
            data = (x, None)
            compare([path], data, memory=False, **settings)  # settle; discarded
            # "control": a second local side, the harness against itself: how far two
            # local measurements of the model drift apart between rounds
            p50s: dict[str, list[float]] = {"local": [], "remote": [], "control": []}
            walls: dict[str, list[float]] = {"local": [], "remote": [], "control": []}
            for round_ in range(args.rounds):
                order = ("local", "remote", "control")
                for side in order if round_ % 2 == 0 else order[::-1]:
                    t0 = time.perf_counter()
                    report = compare([path], data, memory=False,
                                     remote=remote if side == "remote" else None, **settings)
                    walls[side].append(time.perf_counter() - t0)
                    p50s[side].append(report.candidates[0].latency.p50_ms)
            local, far = float(np.median(p50s["local"])), float(np.median(p50s["remote"]))
            ratio = far / local
            # Judged by the rounds' paired ratios: each pair ran back to back under the
            # same load, where the medians of two sides drift apart with it (see control)
            paired = float(np.median([r / h for r, h in zip(p50s["remote"], p50s["local"])]))
            passed &= abs(paired - 1) <= 0.10
            emit({"benchmark": "remote_vs_local", "model": name,
                  "local_p50_ms": round(local, 4), "remote_p50_ms": round(far, 4),
                  "ratio": round(ratio, 4),
                  "median_round_ratio": round(paired, 4),
                  "round_ratios": [round(r / h, 3) for r, h in zip(p50s["remote"],
                                                                   p50s["local"])],
                  "local_p50s_ms": [round(v, 4) for v in p50s["local"]],
                  "remote_p50s_ms": [round(v, 4) for v in p50s["remote"]],
                  "control_ratio": round(float(np.median(p50s["control"])) / local, 4),
                  "control_median_round_ratio": round(float(np.median(
                      [c / h for c, h in zip(p50s["control"], p50s["local"])])), 4),
                  "control_p50s_ms": [round(v, 4) for v in p50s["control"]],
                  "pass": abs(paired - 1) <= 0.10,
                  "ratio_of_medians_within_10pct": abs(ratio - 1) <= 0.10})
            emit({"benchmark": "remote_overhead", "model": name,
                  "local_compare_s": round(float(np.median(walls["local"])), 2),
                  "remote_compare_s": round(float(np.median(walls["remote"])), 2)})
            mem_local = compare([path], data, memory=True, **settings).candidates[0].memory
            mem_far = compare([path], data, memory=True, remote=remote,
                              **settings).candidates[0].memory
            emit({"benchmark": "remote_memory", "model": name,
                  "local_net_mb": mem_local.net_mb, "remote_net_mb": mem_far.net_mb,
                  "local_idle_mb": mem_local.idle_mb, "remote_idle_mb": mem_far.idle_mb})
    shutil.rmtree(sshd_folder, ignore_errors=True)
    emit({"benchmark": "remote_load", "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()]})
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
