"""Quantization-aware training on the digits protocol (../shared/BENCHMARKS.md, task D).

Prints JSON lines: per seed, the float baseline and the QAT model (5 fine-tuning
epochs) exported to int8 LiteRT with no representative data: accuracy, bytes,
gzip, Keras-vs-LiteRT argmax agreement; then the models tfmot cannot or does
not cover (Conv1D on MNIST-1D, a Conv+BN+ReLU / depthwise / residual Add /
Concatenate net, MobileNetV2): fully int8 or not, parity; then the epoch-time
ratio of a QAT to a plain 32x32x3 CNN.

    python benchmarks/qat.py [--seeds 0 1 2] [--skip-extra] [--skip-timing]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import (  # noqa: E402
    BATCH, FINETUNE_EPOCHS, compile_for_digits, conv_net_32, litert_metrics, print_epoch_time,
)


def digits_rows(seed: int) -> None:
    from kmot.demo import train_digits_baseline
    from kmot.export import parity, to_litert
    from kmot.quantization import quantize_model

    base, (x_train, y_train, x_test, y_test) = train_digits_baseline(seed=seed)
    floatm = litert_metrics(to_litert(base), x_test, y_test)
    print(json.dumps({"benchmark": "qat_digits", "seed": seed, "variant": "float", **floatm}), flush=True)
    qat = compile_for_digits(quantize_model(base))
    qat.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
    content = to_litert(qat)
    line = {"benchmark": "qat_digits", "seed": seed, "variant": "qat_int8",
            **litert_metrics(content, x_test, y_test, floatm["gzip_bytes"]),
            "argmax_agreement": round(parity(qat, content, x_test).argmax_agreement, 4)}
    line["delta_vs_float_pt"] = round(100 * (line["accuracy"] - floatm["accuracy"]), 2)
    line["pass"] = line["delta_vs_float_pt"] >= -0.3 and line["argmax_agreement"] >= 0.995
    print(json.dumps(line), flush=True)


def extra_rows() -> None:
    import keras
    import numpy as np

    from kmot.data import digits, mnist1d
    from kmot.export import LiteRTModel, inspect, parity, to_litert
    from kmot.quantization import quantize_model

    def report(name, model, x, y, x_test, y_test, epochs, train_first=True):
        keras.utils.set_random_seed(0)
        if train_first:
            compile_for_digits(model).fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
        qat = compile_for_digits(quantize_model(model))
        qat.fit(x, y, batch_size=BATCH, epochs=epochs if train_first else 1, verbose=0)
        content = to_litert(qat, allow_float_fallback=True)
        info = inspect(content)
        p = parity(qat, content, x_test)
        print(json.dumps({
            "benchmark": "qat_models", "model": name,
            "float_ops_between_io": [op.name for op in info.float_ops_between_io()],
            "argmax_agreement": round(p.argmax_agreement, 4),
            "keras_qat_accuracy": round(float(np.mean(
                np.argmax(qat.predict(x_test, verbose=0), -1) == y_test)), 4),
            "litert_accuracy": round(float(np.mean(
                np.argmax(LiteRTModel(content).predict(x_test, batch_size=64), -1) == y_test)), 4),
            "bytes": info.size_bytes,
        }), flush=True)

    x, y, xt, yt = mnist1d()
    conv1d = keras.Sequential([
        keras.Input((40, 1)), keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
        keras.layers.Conv1D(32, 3, strides=2, activation="relu"),
        keras.layers.Conv1D(32, 3, strides=2, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    report("conv1d_mnist1d", conv1d, x, y, xt, yt, epochs=15)

    x, y, xt, yt = digits()
    inp = keras.Input((8, 8, 1))
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    d = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(keras.layers.DepthwiseConv2D(3, padding="same")(h)))
    r = keras.layers.Add()([h, d])
    c = keras.layers.Concatenate()([r, keras.layers.Conv2D(8, 1, activation="relu")(r)])
    out = keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.MaxPooling2D()(c)))
    report("conv_bn_depthwise_add_concat", keras.Model(inp, out), x, y, xt, yt, epochs=10)

    mobilenet = keras.applications.MobileNetV2(weights=None)
    xr = np.random.default_rng(0).uniform(-1, 1, size=(16, 224, 224, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    qat = quantize_model(mobilenet)
    qat.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    qat.fit(xr, np.zeros(16), batch_size=8, epochs=1, verbose=0)  # activation ranges only
    content = to_litert(qat)
    p = parity(qat, content, xr)
    print(json.dumps({"benchmark": "qat_models", "model": "mobilenetv2_random_weights",
                      "float_ops_between_io": [op.name for op in inspect(content).float_ops_between_io()],
                      "argmax_agreement": round(p.argmax_agreement, 4),
                      "max_abs_error": p.max_abs_error}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-extra", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    for seed in args.seeds:
        digits_rows(seed)
    if not args.skip_extra:
        extra_rows()
    if not args.skip_timing:
        from kmot.quantization import quantize_model

        print_epoch_time("qat_epoch_time", lambda: quantize_model(conv_net_32()), 1.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
