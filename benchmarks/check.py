"""What `kmot check` costs, and what it adds to `quantize_model(target=...)`.

For the digits CNN and MobileNetV2 (96x96, alpha 0.35, weights=None): seconds of
`check(model, target)` for every target, and of `quantize_model(model)` without
and with ``target="litert-int8"`` (the check runs before QAT is prepared). One
JSON line per measurement; the best of ``--repeats`` runs, after one warm-up
(TensorFlow's first import and trace are not counted).

    TF_CPP_MIN_LOG_LEVEL=3 python benchmarks/check.py [--repeats 2] [--skip-mobilenet]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def best(repeats: int, fn, *args, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args()

    import keras

    from kmot.data.digits import digits_cnn
    from kmot.export.check import TARGETS, check
    from kmot.quantization import quantize_model

    models = {"digits_cnn": digits_cnn(compile=False)}
    if not args.skip_mobilenet:
        models["mobilenet_v2_96_a035"] = keras.applications.MobileNetV2(
            input_shape=(96, 96, 3), alpha=0.35, weights=None)
    check(models["digits_cnn"], "litert")  # warm-up: imports and first trace
    for name, model in models.items():
        for target in TARGETS:
            seconds = best(args.repeats, check, model, target)
            print(json.dumps({"model": name, "check_target": target, "seconds": round(seconds, 2)}))
        plain = best(args.repeats, quantize_model, model)
        checked = best(args.repeats, quantize_model, model, target="litert-int8")
        print(json.dumps({"model": name, "quantize_model_seconds": round(plain, 2),
                          "with_target_litert_int8_seconds": round(checked, 2),
                          "added_seconds": round(checked - plain, 2)}))


if __name__ == "__main__":
    main()
