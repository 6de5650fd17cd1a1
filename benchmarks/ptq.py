"""Post-training quantization on the digits protocol (../shared/BENCHMARKS.md, task D).

Prints one JSON line per export mode, then a summary line with the acceptance
checks, then (unless --skip-mobilenet) a line for MobileNetV2 converted to full int8.

    python benchmarks/ptq.py [--seeds 0 1 2] [--skip-mobilenet]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def mobilenet_int8() -> dict:
    import keras
    import numpy as np

    from kmot.export import inspect, to_litert

    model = keras.applications.MobileNetV2(weights=None)
    calib = np.random.default_rng(0).uniform(-1, 1, size=(16, 224, 224, 3)).astype("float32")
    start = time.perf_counter()
    content = to_litert(model, quantize="int8", representative_data=calib)
    info = inspect(content)
    return {
        "benchmark": "ptq_mobilenetv2_int8",
        "convert_s": round(time.perf_counter() - start, 1),
        "bytes": info.size_bytes,
        "ops": len(info.ops),
        "float_ops_between_io": [op.name for op in info.float_ops_between_io()],
        "op_counts": info.op_counts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args()

    from kmot.demo import ptq_rows, train_digits_baseline

    for seed in args.seeds:
        model, (x_train, _, x_test, y_test) = train_digits_baseline(epochs=args.epochs, seed=seed)
        rows = ptq_rows(model, x_train, x_test, y_test,
                        modes=("float32", "float16", "dynamic", "int8", "int16x8"))
        for row in rows:
            print(json.dumps({"benchmark": "ptq_digits", "seed": seed, **row}), flush=True)
        by = {r["mode"]: r for r in rows}
        summary = {
            "benchmark": "ptq_digits_summary",
            "seed": seed,
            "int8_accuracy_delta_pt": round(100 * (by["int8"]["accuracy"] - by["float32"]["accuracy"]), 2),
            "int8_bytes_ratio": round(by["int8"]["bytes"] / by["float32"]["bytes"], 4),
            "int8_p50_speedup": round(by["float32"]["p50_ms"] / by["int8"]["p50_ms"], 2),
        }
        summary["pass"] = summary["int8_accuracy_delta_pt"] >= -0.5 and summary["int8_bytes_ratio"] <= 0.30
        print(json.dumps(summary), flush=True)
    if not args.skip_mobilenet:
        line = mobilenet_int8()
        line["pass"] = line["float_ops_between_io"] == []
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
