"""Does the evaluation harness measure what a bare interpreter loop measures?

MobileNetV2 (random weights, 224x224) as float32 and full-int8 LiteRT files, on
one thread. Prints JSON lines:

- ``harness_vs_bare``: the int8 file's p50 from `kmot.evaluate.compare` next to a
  bare ``interpreter.invoke()`` loop (same file, same threads, same process),
  interleaved over a few rounds, medians compared; acceptance: within 5%.
- ``harness_repeat``: two `compare` runs of the same files; spread of their p50s
  (|a - b| / mean); acceptance: within 10%.
- ``harness_memory``: net peak memory of float vs int8 and the difference next to
  the difference of their weight bytes; acceptance: "roughly" equal (reported as
  a ratio). A diagnostic repeats the measurement without the default XNNPACK
  delegate, which keeps a repacked copy of the weights.
- ``harness_candidate``: each candidate's figures from the first run.

    python benchmarks/harness.py [--runs 200] [--warmup 20] [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# A child that loads a file without the default delegates (no XNNPACK weight copy).
_NO_DELEGATE_CHILD = r"""
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
path = sys.argv[1]
if path:
    it = Interpreter(model_path=path, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(3):
        it.invoke()
with open("/proc/self/status") as f:
    kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"bytes": kib * 1024}))
"""


def _no_delegate_mb(path: str) -> float:
    out = subprocess.run([sys.executable, "-c", _NO_DELEGATE_CHILD, path], capture_output=True,
                         text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])["bytes"] / 1e6


def bare_loop_ms(content: bytes, x, *, threads: int, runs: int, warmup: int):
    """The reference: a bare interpreter, inputs set once, perf_counter around invoke."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times[i] = time.perf_counter() - start
    return times * 1e3


def alternating_p50s(contents: dict[str, bytes], x, rounds: int, runs: int = 50) -> dict[str, float]:
    """p50 ms per model, batch 1, 1 thread, rounds alternating between the models."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for name, content in contents.items():
        interpreter = Interpreter(model_content=content, num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        sample = x[:1]
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            sample = np.clip(np.round(sample / scale + zero), -128, 127).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], sample)
        for _ in range(10):
            interpreter.invoke()
        interpreters[name] = interpreter
    times = {name: [] for name in contents}
    for _ in range(rounds):
        for name, interpreter in interpreters.items():
            for _ in range(runs):
                start = time.perf_counter()
                interpreter.invoke()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.percentile(t, 50)) for name, t in times.items()}


def weight_bytes(path: Path) -> int:
    import numpy as np

    from kmot.export import inspect

    return sum(w.size * np.dtype(w.dtype).itemsize for w in inspect(path).weights)


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="kmot-harness-"))
    try:
        return run(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=32, help="validation images")
    parser.add_argument("--rounds", type=int, default=5, help="bare/harness interleaved rounds")
    args = parser.parse_args()

    import keras
    import numpy as np

    from kmot._quiet import captured_output
    from kmot.evaluate import compare
    from kmot.export import to_litert

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None)
    calib = rng.uniform(-1, 1, size=(16, 224, 224, 3)).astype("float32")
    start = time.perf_counter()
    to_litert(model, folder / "mobilenetv2_float.tflite")
    to_litert(model, folder / "mobilenetv2_int8.tflite", quantize="int8",
              representative_data=calib)
    emit({"benchmark": "harness_setup", "convert_s": round(time.perf_counter() - start, 1),
          "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
          "cpu_count": os.cpu_count()})

    x_val = rng.uniform(-1, 1, size=(args.samples, 224, 224, 3)).astype("float32")
    files = [folder / "mobilenetv2_float.tflite", folder / "mobilenetv2_int8.tflite"]
    settings = dict(runs=args.runs, warmup=args.warmup, threads=args.threads, progress=False)

    # The reference and the harness, interleaved in this process (order alternating
    # each round) so that drift of the machine's speed hits both alike.
    int8_content = files[1].read_bytes()
    bare_p50s, harness_p50s = [], []
    with captured_output():  # settle the process and CPU first; this round is discarded
        bare_loop_ms(int8_content, x_val[:1], threads=args.threads, runs=args.runs,
                     warmup=args.warmup)
    for round_ in range(args.rounds):
        for which in ("bare", "harness") if round_ % 2 == 0 else ("harness", "bare"):
            if which == "bare":
                with captured_output():
                    bare_p50s.append(float(np.percentile(bare_loop_ms(
                        int8_content, x_val[:1], threads=args.threads, runs=args.runs,
                        warmup=args.warmup), 50)))
            else:
                one = compare([files[1]], (x_val, None), memory=False, **settings)
                harness_p50s.append(one.candidates[0].latency.p50_ms)
    # Two complete harness runs of both files (the first also measures memory).
    first = compare(files, (x_val, None), memory=True, **settings)
    second = compare(files, (x_val, None), memory=False, **settings)

    for c in first.candidates:
        emit({"benchmark": "harness_candidate", "name": c.name,
              "p50_ms": round(c.latency.p50_ms, 3), "p90_ms": round(c.latency.p90_ms, 3),
              "p99_ms": round(c.latency.p99_ms, 3), "std_ms": round(c.latency.std_ms, 3),
              "latency_ratio": round(c.latency_ratio, 3),
              "net_peak_mb": c.memory.net_mb if c.memory else None,
              "bytes": c.size.bytes, "gzip_bytes": c.size.gzip_bytes,
              "ops_int8": c.ops.int8, "ops_float": c.ops.float, "fallback": c.ops.fallback,
              "argmax_agreement": c.fidelity.argmax_agreement if c.fidelity else None,
              "kl": c.fidelity.kl_divergence if c.fidelity else None})

    harness_p50, bare_p50 = float(np.median(harness_p50s)), float(np.median(bare_p50s))
    ratio = harness_p50 / bare_p50
    emit({"benchmark": "harness_vs_bare", "model": "mobilenetv2_int8", "rounds": args.rounds,
          "harness_p50_ms": round(harness_p50, 3), "bare_p50_ms": round(bare_p50, 3),
          "ratio": round(ratio, 4),
          "round_ratios": [round(h / b, 3) for h, b in zip(harness_p50s, bare_p50s)],
          "harness_p50s_ms": [round(v, 3) for v in harness_p50s],
          "bare_p50s_ms": [round(v, 3) for v in bare_p50s],
          "pass": abs(ratio - 1) <= 0.05})

    for name in ("mobilenetv2_int8", "mobilenetv2_float"):
        a = first.candidate(name).latency.p50_ms
        b = second.candidate(name).latency.p50_ms
        spread = abs(a - b) / ((a + b) / 2)
        emit({"benchmark": "harness_repeat", "model": name, "p50_run1_ms": round(a, 3),
              "p50_run2_ms": round(b, 3), "spread": round(spread, 4), "pass": spread <= 0.10})

    flt, int8 = (first.candidate(n).memory for n in ("mobilenetv2_float", "mobilenetv2_int8"))
    w_float, w_int8 = (weight_bytes(f) for f in files)
    memory_diff = flt.net_mb - int8.net_mb
    weight_diff = (w_float - w_int8) / 1e6
    no_delegate = {n: _no_delegate_mb(str(f)) for n, f in zip(("float", "int8"), files)}
    idle = _no_delegate_mb("")
    emit({"benchmark": "harness_memory", "idle_mb": flt.idle_mb,
          "float_net_mb": flt.net_mb, "int8_net_mb": int8.net_mb,
          "memory_diff_mb": round(memory_diff, 2),
          "weights_float_mb": round(w_float / 1e6, 2), "weights_int8_mb": round(w_int8 / 1e6, 2),
          "weight_diff_mb": round(weight_diff, 2),
          "memory_diff_over_weight_diff": round(memory_diff / weight_diff, 3),
          "no_xnnpack_float_net_mb": round(no_delegate["float"] - idle, 2),
          "no_xnnpack_int8_net_mb": round(no_delegate["int8"] - idle, 2),
          "no_xnnpack_diff_over_weight_diff": round(
              (no_delegate["float"] - no_delegate["int8"]) / weight_diff, 3),
          "pass": 0.75 <= memory_diff / weight_diff <= 1.5})
    return 0


if __name__ == "__main__":
    sys.exit(main())
