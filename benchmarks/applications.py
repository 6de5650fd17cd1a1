"""keras.applications models through pruning, clustering and QAT, to fully int8 LiteRT.

Each model is built with ``weights=None, classes=10`` at 32x32x3 (the
extra models Xception and InceptionV3 at 72 and 80, their smallest sizes being
above 32; ``--models`` names the extras, see `EXTRA_MODELS`) and trained
briefly on the bundled digits upscaled to that size, scaled to 0-255 and passed
through the model's own ``preprocess_input`` (BatchNormalization momentum 0.9,
so that a few hundred steps give inference outputs that are not degenerate).
Then, each from that baseline:

* prune: `prune_low_magnitude` at 50% (ConstantSparsity), fine-tuned, stripped;
* cluster: `cluster_weights` with 16 clusters, fine-tuned, stripped;
* QAT: `quantize_model`, fine-tuned, exported with `to_litert` in strict int8
  (it fails when any compute op between input and output stays float), then
  the Keras model and the file are compared on the test images: argmax agreement
  under LiteRT's builtin kernels (those `kmot.export.parity` runs) and under its
  default XNNPACK kernels, beside the file's agreement with itself across those two
  kernel sets (what `kmot.export.kernel_agreement` measures: how far the runtime's
  own int8 rounding moves this model's decisions), each from one pass (the
  judgement, >= 99%, is on the default kernels, which LiteRT runs unless told
  otherwise; a baseline that did not train fails), and, with
  ``--noise-floor``, the model's rounding noise floor
  (`kmot.quantization.rounding_noise_floor`).

Prints one JSON line per model as it finishes (what failed and why, if anything;
where the seconds went) and a summary. Models run two at a time, each in its own
process (``--jobs``).

    python benchmarks/applications.py [--models MobileNetV3Small ...] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

MODELS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0",
          "EfficientNetV2B0", "ResNet50", "DenseNet121", "NASNetMobile", "ConvNeXtTiny")
#: Run only when named (``--models``): other layer mixes (pre-activation
#: BatchNormalization, SeparableConv2D stems, BatchNormalization without scale).
EXTRA_MODELS = ("ResNet50V2", "VGG16", "Xception", "InceptionV3", "EfficientNetV2B1")
#: The input size, where the model's smallest is above 32 (a multiple of 8: the
#: digits upscale by a whole factor).
_SIZE = {"Xception": 72, "InceptionV3": 80}
BATCH = 64
#: The order models start in: the slowest first, so that the two workers finish
#: together, and NASNetMobile (the longest, about 14 GB at its peak) beside the small
#: MobileNets rather than beside ConvNeXtTiny or DenseNet121.
_START_ORDER = ("NASNetMobile", "MobileNet", "MobileNetV3Small", "MobileNetV2", "MobileNetV3Large",
                "ConvNeXtTiny", "DenseNet121", "EfficientNetV2B0", "ResNet50", "EfficientNetB0")


_PREPROCESS = {  # the module whose preprocess_input each model expects (identity for the
    # models that keep their preprocessing inside: MobileNetV3, EfficientNet, ConvNeXt)
    "MobileNet": "mobilenet", "MobileNetV2": "mobilenet_v2", "MobileNetV3Small": "mobilenet_v3",
    "MobileNetV3Large": "mobilenet_v3", "EfficientNetB0": "efficientnet",
    "EfficientNetV2B0": "efficientnet_v2", "ResNet50": "resnet50", "DenseNet121": "densenet",
    "NASNetMobile": "nasnet", "ConvNeXtTiny": "convnext", "ResNet50V2": "resnet_v2",
    "VGG16": "vgg16", "Xception": "xception", "InceptionV3": "inception_v3",
    "EfficientNetV2B1": "efficientnet_v2",
}


def _build(name: str):
    import keras

    size = _SIZE.get(name, 32)
    model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None,
                                              classes=10)
    for layer in model.layers:
        # A few hundred steps leave BatchNormalization's moving statistics (momentum
        # 0.99) near their initial values, and inference outputs degenerate.
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def _data(name: str, data):
    """The digits as the model expects them: 0-255 RGB through its preprocess_input."""
    import keras

    preprocess = getattr(keras.applications, _PREPROCESS[name]).preprocess_input
    x, y, x_test, y_test = data
    return (preprocess(x * 255.0).astype("float32"), y,
            preprocess(x_test * 255.0).astype("float32"), y_test)


#: Fine-tuning learning rates: the baselines and pruning (50% of the weights gone at
#: once) train at 1e-3; clustering at 1e-4; QAT at 1e-5, since with BatchNormalization
#: folded nothing renormalizes a deep net's activations (ResNet50 collapsed to chance
#: at 1e-4).
PRUNE_LR, CLUSTER_LR, QAT_LR = 1e-3, 1e-4, 1e-5


#: Whether the fits compile with XLA (``--jit``). Keras's ``"auto"`` leaves XLA off
#: on a CPU-only TensorFlow. Measured once on 2 cores, it did not shorten the run:
#: MobileNetV3Small took 1282 s (322 s without), ConvNeXtTiny 2149 s (1974 s),
#: ResNet50 1397 s (1172 s; its baseline 487 s against 648 s), so it stays off.
JIT = {"jit_compile": "auto"}


def _fit(model, x, y, epochs, lr=1e-3):
    import keras

    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"], jit_compile=JIT["jit_compile"])
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    return model


def _accuracy(model, x, y) -> float:
    import numpy as np

    return round(float(np.mean(model.predict(x, verbose=0, batch_size=BATCH).argmax(-1) == y)), 4)


def _agree(a, b) -> float:
    import numpy as np

    return round(float(np.mean(a == b)), 4)


def _step(row: dict, key: str, fn) -> object:
    """Runs one step; records its figures or the failure and its reason."""
    start = time.perf_counter()
    try:
        result, figures = fn()
        row[key] = {"ok": True, **figures}
    except Exception as err:  # noqa: BLE001 - a benchmark reports every failure
        result = None
        row[key] = {"ok": False, "error": f"{type(err).__name__}: {str(err)[:600]}",
                    "where": traceback.format_exc(limit=-2).splitlines()[-3:]}
    row[key]["seconds"] = round(time.perf_counter() - start, 1)
    return result


class _Clock:
    """Seconds of each part of a step, for the row (where the time goes)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 1)
        self._last = now


def run(name: str, data, epochs: int, finetune_epochs: int, noise_floor: bool) -> dict:
    import keras

    from kmot import clustering, quantization, sparsity
    from kmot.export import LiteRTModel, inspect, to_litert

    x, y, x_test, y_test = data = _data(name, data)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    row: dict = {"benchmark": "applications", "model": name, "jit": JIT["jit_compile"]}
    def baseline():
        model = _fit(_build(name), x, y, epochs)
        return model, {"params": model.count_params(), "accuracy": _accuracy(model, x_test, y_test)}

    base = _step(row, "baseline", baseline)
    if base is None:
        return row

    def prune():
        pruned = _fit(sparsity.prune_low_magnitude(
            base, pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=10)),
            x, y, finetune_epochs, lr=PRUNE_LR)
        final = sparsity.strip_pruning(pruned)
        return final, {"sparsity": round(sparsity.summary(final).overall, 4),
                       "accuracy": _accuracy(final, x_test, y_test)}

    def cluster():
        clustered = _fit(clustering.cluster_weights(base, number_of_clusters=16), x, y,
                         finetune_epochs, lr=CLUSTER_LR)
        final = clustering.strip_clustering(clustered)
        return final, {"max_unique_values": max(w.unique_values for w in clustering.summary(final).weights),
                       "accuracy": _accuracy(final, x_test, y_test)}

    def qat():
        import warnings

        clock = _Clock()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = quantization.quantize_model(base)
        left_float = [str(w.message) for w in caught if "stay float" in str(w.message)]
        clock.lap("wrap")
        model = _fit(model, x, y, finetune_epochs, lr=QAT_LR)
        figures = {"keras_accuracy": _accuracy(model, x_test, y_test), "left_float": left_float}
        clock.lap("fit")
        try:
            content = to_litert(model)  # strict: every compute op int8, or it fails
        except Exception as err:  # noqa: BLE001 - report which ops stay float
            loose = inspect(to_litert(model, allow_float_fallback=True))
            floats = sorted({op.name for op in loose.float_ops_between_io()})
            raise RuntimeError(f"not fully int8: float ops {floats}; {str(err)[:300]}") from err
        clock.lap("convert")
        info = inspect(content)
        # One pass each of Keras, LiteRT's builtin kernels (what `parity` runs) and its
        # default XNNPACK kernels; the last two agreeing is `kernel_agreement`.
        answers = {"keras": model.predict(x_test, verbose=0, batch_size=BATCH).argmax(-1)}
        for kernels in ("builtin", "default"):
            answers[kernels] = LiteRTModel(content, kernels=kernels).predict(x_test).argmax(-1)
        clock.lap("parity")
        floor = (quantization.rounding_noise_floor(model, x_test, trials=3) if noise_floor
                 else [])
        clock.lap("noise_floor")
        figures.update({"step_seconds": clock.laps,
                        "argmax_agreement": _agree(answers["keras"], answers["builtin"]),
                        "argmax_agreement_xnnpack": _agree(answers["keras"], answers["default"]),
                        "kernel_agreement": _agree(answers["builtin"], answers["default"]),
                        "fully_int8": info.float_ops_between_io() == [], "ops": len(info.ops),
                        "int8_bytes": info.size_bytes,
                        "rounding_noise_floor": [round(a, 4) for a in floor]})
        return model, figures

    _step(row, "prune", prune)
    _step(row, "cluster", cluster)
    _step(row, "qat", qat)
    row["seconds"] = round(time.perf_counter() - start, 1)
    import resource

    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def _run_isolated(name: str, args) -> dict:
    """One model in a child process: graphs of ten models in one process exhaust 24 GiB."""
    import subprocess

    command = [sys.executable, __file__, "--one", name, "--epochs", str(args.epochs),
               "--finetune-epochs", str(args.finetune_epochs)] + (
                   ["--noise-floor"] if args.noise_floor else []) + (["--jit"] if args.jit else [])
    result = subprocess.run(command, capture_output=True, text=True)
    rows = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not rows:
        return {"benchmark": "applications", "model": name,
                "baseline": {"ok": False, "error": f"child exited {result.returncode}: "
                                                   f"{result.stderr.strip()[-600:]}"}}
    return json.loads(rows[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        choices=MODELS + EXTRA_MODELS,
                        help=f"default: the ten; also: {', '.join(EXTRA_MODELS)}")
    parser.add_argument("--epochs", type=int, default=5, help="baseline epochs")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2,
                        help="models run at once, each in its own process (much of a model's "
                             "time is single-threaded graph building and conversion)")
    parser.add_argument("--noise-floor", action="store_true",
                        help="also measure the QAT model's rounding noise floor (three more "
                             "traced passes of the Keras model per model)")
    parser.add_argument("--jit", action="store_true",
                        help="compile the fits with XLA (jit_compile=True); Keras leaves it off "
                             "on CPU-only TensorFlow, and it made the run longer here")
    parser.add_argument("--one", choices=MODELS + EXTRA_MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1. Received: {args.jobs}")
    start = time.perf_counter()
    if args.jit:
        JIT["jit_compile"] = True

    if args.one:
        from kmot.data import digits

        data = digits(image_size=_SIZE.get(args.one, 32), channels=3)
        print(json.dumps(run(args.one, data, args.epochs,
                             args.finetune_epochs, args.noise_floor)), flush=True)
        return
    passed, failed = [], {}
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each model in its own child
        order = sorted(args.models, key=(_START_ORDER + EXTRA_MODELS).index)
        futures = {pool.submit(_run_isolated, name, args): name for name in order}
        for future in as_completed(futures):  # each row as soon as its model is done
            name, row = futures[future], future.result()
            print(json.dumps(row), flush=True)
            _judge(name, row, passed, failed)
    passed.sort(key=args.models.index)
    print(json.dumps({"benchmark": "applications_summary",
                      "fully_int8_with_parity": f"{len(passed)} of {len(args.models)}",
                      "passed": passed, "failed": failed,
                      "seconds": round(time.perf_counter() - start, 1)}), flush=True)


#: The acceptance: Keras-vs-LiteRT argmax agreement, judged on LiteRT's default CPU
#: kernels (XNNPACK: what ``Interpreter(model_path=...)`` runs); the builtin kernels'
#: (what `kmot.export.parity` runs, as it reads intermediate tensors) is reported beside.
AGREEMENT = 0.99
#: A baseline below this accuracy did not train (chance is 0.1): its QAT agreement would
#: be of a constant answer.
TRAINED = 0.2


def _step_passed(key: str, step: dict) -> bool:
    if key == "baseline":
        return bool(step.get("ok")) and step.get("accuracy", 0) >= TRAINED
    if key != "qat":
        return bool(step.get("ok"))
    return bool(step.get("ok") and step.get("fully_int8")
                and step.get("argmax_agreement_xnnpack", 0) >= AGREEMENT)


def _judge(name: str, row: dict, passed: list, failed: dict) -> None:
    """Files the model under passed (every step ran, QAT fully int8 with agreement
    >= 99% on LiteRT's default kernels, a baseline that trained) or under failed, with
    the steps that did not and why."""
    missing = {key: row[key].get("error", row[key]) for key in ("baseline", "prune", "cluster", "qat")
               if key in row and not _step_passed(key, row[key])}
    if "baseline" in missing and row["baseline"].get("ok"):
        missing["baseline"] = (f"accuracy {row['baseline'].get('accuracy')}: the model did not "
                               f"train (chance is 0.1, expected at least {TRAINED})")
    if missing or "qat" not in row:
        failed[name] = missing
    else:
        passed.append(name)


if __name__ == "__main__":
    main()
