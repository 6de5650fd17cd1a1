"""Channel pruning: fewer MACs and parameters, and the LiteRT speed-up they buy.

A Functional net with a residual Add, a Concatenate, depthwise-separable convs,
squeeze-excite and BatchNormalization, trained on digits upscaled to 32x32x3, has
50% of its channels removed by `kmot.sparsity.prune_channels` with l2, bn and
taylor importance, and is fine-tuned 5 epochs. Reported per importance:
parameters, MACs, accuracy (Keras, before and after fine-tuning), and the p50
latency speed-up vs the unpruned model in float and int8 LiteRT, measured in one
run: batch 1, 1 thread, the default XNNPACK delegate, rounds alternating between
the models. ``speedup_per_mac_reduction`` is the measured speed-up divided by the
MAC reduction: how much of the arithmetic saving LiteRT turns into time.

With ``--applications``: keras.applications MobileNetV2 at 96x96 and ResNet50 at
64x64 (weights=None, untrained: speed does not depend on the weights' values),
pruned 30/50/70% by l2: parameters, MACs and the measured float and int8 speed-up
(int8 by post-training quantization, calibrated).

    python benchmarks/structured.py [--epochs 15] [--rounds 15] [--applications]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))


def se_net():
    import keras
    from keras import layers as L

    i = keras.Input((32, 32, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same", name="stem")(i)))
    y = L.DepthwiseConv2D(3, padding="same", name="dw1")(x)
    y = L.ReLU()(L.BatchNormalization()(y))
    y = L.BatchNormalization()(L.Conv2D(32, 1, name="pw1")(y))
    x = L.Add(name="residual")([x, y])
    x = L.MaxPooling2D()(x)
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 1, name="branch_a")(x)))
    b = L.ReLU()(L.BatchNormalization()(L.SeparableConv2D(64, 3, padding="same", name="branch_b")(x)))
    x = L.Concatenate()([a, b])
    s = L.GlobalAveragePooling2D()(x)
    s = L.Dense(24, activation="relu", name="squeeze")(s)
    s = L.Reshape((1, 1, 96))(L.Dense(96, activation="sigmoid", name="excite")(s))
    x = L.Multiply()([x, s])
    x = L.MaxPooling2D()(x)
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(128, 3, padding="same", name="head")(x)))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(i, L.Dense(10, name="logits")(x))
    for layer in model.layers:  # a few hundred steps: moving statistics must keep up
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = 0.9
    return model


def _compile(model):
    import keras

    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _accuracy(model, x, y) -> float:
    return round(float((model.predict(x, verbose=0).argmax(-1) == y).mean()), 4)


def _p50s(contents: dict[str, bytes], x, rounds: int, runs: int = 50) -> dict[str, float]:
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


def applications(sparsities, rounds: int) -> None:
    """MobileNetV2 at 96x96 and ResNet50 at 64x64 (weights=None), pruned by l2: params,
    MACs and the measured float and int8 (post-training, calibrated) speed-up."""
    import keras
    import numpy as np

    from kmot import sparsity
    from kmot.core.cost import macs
    from kmot.export import to_litert

    for name, size in (("MobileNetV2", 96), ("ResNet50", 64)):
        keras.utils.set_random_seed(0)
        base = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None,
                                                 classes=10)
        calibration = np.random.default_rng(0).uniform(-1, 1, (32, size, size, 3)).astype("float32")
        models = {"base": base, **{f"{s:.0%}": sparsity.prune_channels(base, sparsity=s)
                                   for s in sparsities}}
        contents = {}
        for label, model in models.items():
            contents[f"{label}/float"] = to_litert(model)
            contents[f"{label}/int8"] = to_litert(model, quantize="int8",
                                                  representative_data=calibration)
        p50 = _p50s(contents, calibration, rounds, runs=10)
        for label, model in models.items():
            if label == "base":
                continue
            reduction = macs(base) / macs(model)
            speedups = {m: p50[f"base/{m}"] / p50[f"{label}/{m}"] for m in ("float", "int8")}
            print(json.dumps({
                "benchmark": "structured", "model": f"{name}_{size}", "variant": f"l2 {label}",
                "params": [base.count_params(), model.count_params()],
                "macs": [macs(base), macs(model)], "mac_reduction": round(reduction, 3),
                "p50_ms_float": [round(p50["base/float"], 3), round(p50[f"{label}/float"], 3)],
                "p50_ms_int8": [round(p50["base/int8"], 3), round(p50[f"{label}/int8"], 3)],
                "speedup_float": round(speedups["float"], 3), "speedup_int8": round(speedups["int8"], 3),
                "speedup_per_mac_reduction": {m: round(v / reduction, 3) for m, v in speedups.items()},
            }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="baseline epochs")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--applications", action="store_true",
                        help="only MobileNetV2 (96x96) and ResNet50 (64x64) at 30/50/70%%")
    args = parser.parse_args()
    if args.applications:
        applications((0.3, 0.5, 0.7), args.rounds)
        return

    import keras

    from kmot import quantization, sparsity
    from kmot.core.cost import macs
    from kmot.data import digits
    from kmot.export import to_litert

    keras.utils.set_random_seed(0)
    x, y, x_test, y_test = digits(image_size=32, channels=3)
    base = _compile(se_net())
    base.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)

    def int8(model):
        qat = _compile(quantization.quantize_model(model))
        qat.optimizer.learning_rate.assign(1e-4)
        qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
        return to_litert(qat)

    contents = {"base/float": to_litert(base), "base/int8": int8(base)}
    rows = {}
    for importance in ("l2", "bn", "taylor"):
        pruned = sparsity.prune_channels(base, sparsity=args.sparsity, importance=importance,
                                         data=(x[:256], y[:256]))
        before = _accuracy(pruned, x_test, y_test)
        _compile(pruned).fit(x, y, epochs=args.finetune_epochs, batch_size=64, verbose=0)
        rows[importance] = {"params": pruned.count_params(), "macs": macs(pruned),
                            "accuracy_before_finetune": before,
                            "accuracy": _accuracy(pruned, x_test, y_test)}
        contents[f"{importance}/float"] = to_litert(pruned)
        contents[f"{importance}/int8"] = int8(pruned)
    p50 = _p50s(contents, x_test, args.rounds)
    base_row = {"params": base.count_params(), "macs": macs(base),
                "accuracy": _accuracy(base, x_test, y_test),
                "p50_ms_float": round(p50["base/float"], 4), "p50_ms_int8": round(p50["base/int8"], 4)}
    print(json.dumps({"benchmark": "structured", "model": "se_net_32", "variant": "unpruned",
                      **base_row}), flush=True)
    for importance, row in rows.items():
        mac_reduction = base_row["macs"] / row["macs"]
        speedups = {mode: p50[f"base/{mode}"] / p50[f"{importance}/{mode}"] for mode in ("float", "int8")}
        print(json.dumps({
            "benchmark": "structured", "model": "se_net_32", "variant": f"{importance} {args.sparsity:.0%}",
            **row, "accuracy_drop_pt": round(100 * (base_row["accuracy"] - row["accuracy"]), 2),
            "mac_reduction": round(mac_reduction, 3),
            "speedup_float": round(speedups["float"], 3), "speedup_int8": round(speedups["int8"], 3),
            "speedup_per_mac_reduction": {m: round(s / mac_reduction, 3) for m, s in speedups.items()},
        }), flush=True)


if __name__ == "__main__":
    main()
