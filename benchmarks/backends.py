"""The digits protocol on the backend of this process (KERAS_BACKEND=tensorflow|jax|torch).

Trains the baseline and fine-tunes pruning 80%, clustering 16, QAT and PCQAT (prune ->
cluster preserving sparsity -> QAT preserving both) as in ../shared/BENCHMARKS.md,
task D, on this process's backend, and exports each to LiteRT (from jax and torch
through a TensorFlow child process). Prints one JSON line per row: LiteRT accuracy
on the 397 test images, gzip bytes, and for the int8 rows whether the file is fully
int8 and the share of test images on which its top-1 class equals the Keras model's
(parity). `--part speed` prints instead the epoch-time ratio of each wrapped model to
the plain one, on the 32x32x3 CNN of the training-overhead protocol, epochs
alternating plain / wrapped so that machine noise hits both alike (wall and CPU
seconds). Run each backend in its own process:

    KERAS_BACKEND=jax python benchmarks/backends.py --part accuracy --seeds 0,1,2
    KERAS_BACKEND=jax python benchmarks/backends.py --part speed
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import (
    BATCH,
    alternating_epochs,
    conv_net_32,
    finetune_digits,
    finetune_steps,
    litert_metrics,
)


def _emit(line: dict) -> None:
    import keras

    print(json.dumps({"benchmark": "backends", "backend": keras.backend.backend(), **line}),
          flush=True)


def _schedule(steps: int):
    from kmot import sparsity

    return sparsity.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps), frequency=max(1, steps // 20))


def accuracy(seed: int) -> None:
    import keras
    import numpy as np

    from kmot import clustering, quantization, sparsity
    from kmot.demo import train_digits_baseline
    from kmot.export import LiteRTModel, inspect, to_litert

    base, (x_train, y_train, x_test, y_test) = train_digits_baseline(seed=seed)

    def finetune(model):
        return finetune_digits(model, x_train, y_train, seed)

    def row(name, model, **export):
        start = time.perf_counter()
        content = to_litert(model, **export)
        line = {"seed": seed, "row": name, **litert_metrics(content, x_test, y_test),
                "export_s": round(time.perf_counter() - start, 1)}
        if export or name in ("QAT", "PCQAT"):
            info = inspect(content)
            keras_top = np.argmax(keras.ops.convert_to_numpy(model(x_test, training=False)), -1)
            lite_top = LiteRTModel(content).predict(x_test, batch_size=64).argmax(-1)
            line["float_ops"] = len(info.float_ops_between_io())
            line["fully_int8"] = line["float_ops"] == 0
            line["parity"] = round(float(np.mean(keras_top == lite_top)), 4)
        _emit(line)

    steps = finetune_steps(len(x_train))
    row("baseline", base)
    pruned = sparsity.strip_pruning(finetune(sparsity.prune_low_magnitude(
        base, pruning_schedule=_schedule(steps))))
    row("prune_80", pruned)
    row("cluster_16", clustering.strip_clustering(finetune(clustering.cluster_weights(
        base, number_of_clusters=16))))
    row("QAT", finetune(quantization.quantize_model(base)))
    both = clustering.strip_clustering(finetune(clustering.cluster_weights(
        pruned, number_of_clusters=16, preserve_sparsity=True)))
    row("PCQAT", finetune(quantization.quantize_model(
        both, preserve_sparsity=True, preserve_clusters=True)))


def speed(samples: int, rounds: int) -> None:
    import keras
    import numpy as np

    from kmot import clustering, quantization, sparsity

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=samples)
    keras.utils.set_random_seed(0)
    plain = conv_net_32()
    steps = 5 * int(np.ceil(samples / BATCH))
    models = {
        "plain": plain,
        "prune_80": sparsity.prune_low_magnitude(plain, pruning_schedule=_schedule(steps)),
        "cluster_16": clustering.cluster_weights(plain, number_of_clusters=16),
        "QAT": quantization.quantize_model(plain),
    }
    wall, cpu = alternating_epochs(models, x, y, rounds=rounds)
    limits = {"prune_80": 1.25, "cluster_16": 1.5, "QAT": 1.5}
    for name, limit in limits.items():
        ratio = wall[name] / wall["plain"]
        _emit({"row": name, "plain_epoch_s": round(wall["plain"], 3),
               "wrapped_epoch_s": round(wall[name], 3), "epoch_time_ratio": round(ratio, 3),
               "cpu_ratio": round(cpu[name] / cpu["plain"], 3),
               "limit": limit, "pass": ratio <= limit})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["accuracy", "speed"], default="accuracy")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (accuracy)")
    parser.add_argument("--samples", type=int, default=1024, help="images per epoch (speed)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per model (speed)")
    args = parser.parse_args()
    if args.part == "speed":
        speed(args.samples, args.rounds)
    else:
        for seed in (int(s) for s in args.seeds.split(",")):
            accuracy(seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
