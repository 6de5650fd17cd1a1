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
seconds).

By default every backend starts from the same point (`--start same`): the baseline's
initial weights are drawn with NumPy from the seed (Glorot-uniform kernels, zero
biases, as Keras's defaults) and every epoch visits the training images in an order
NumPy draws from the seed, so two backends differ only by their arithmetic and by
kmot's code on them. `--start own` lets each backend draw its own initial weights
and batch order from the seed (keras.utils.set_random_seed), as a user would: a
3-seed mean then also carries the seeds' spread (about half a point here).
Run each backend in its own process:

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
    FINETUNE_EPOCHS,
    alternating_epochs,
    compile_for_digits,
    conv_net_32,
    finetune_digits,
    finetune_steps,
    litert_metrics,
)


#: The protocol's baseline epochs (kmot.demo.train_digits_baseline's default).
BASELINE_EPOCHS = 15


def _emit(line: dict) -> None:
    import keras

    print(json.dumps({"benchmark": "backends", "backend": keras.backend.backend(), **line}),
          flush=True)


def _schedule(steps: int):
    from kmot import sparsity

    return sparsity.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps), frequency=max(1, steps // 20))


def _numpy_start(model, seed: int) -> None:
    """Sets `model`'s weights as Keras's default initializers would, drawn with NumPy:
    the same values on every backend."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for var in model.weights:
        shape = tuple(var.shape)
        if len(shape) >= 2:  # a kernel: glorot_uniform
            field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            limit = np.sqrt(6.0 / (field * (shape[-2] + shape[-1])))
            var.assign(rng.uniform(-limit, limit, size=shape).astype("float32"))
        else:  # a bias
            var.assign(np.zeros(shape, "float32"))


def _fit_in_order(model, x, y, *, epochs: int, seed: int):
    """`epochs` epochs at the protocol's batch size, each visiting the images in an
    order NumPy draws from `seed` and the epoch: the same batches on every backend."""
    import numpy as np

    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(x))
        model.fit(x[order], y[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def accuracy(seed: int, start: str) -> None:
    import keras
    import numpy as np

    from kmot import clustering, quantization, sparsity
    from kmot.data import digits, digits_cnn
    from kmot.demo import train_digits_baseline
    from kmot.export import LiteRTModel, inspect, to_litert

    if start == "own":
        base, (x_train, y_train, x_test, y_test) = train_digits_baseline(seed=seed)
    else:
        keras.utils.set_random_seed(seed)
        x_train, y_train, x_test, y_test = digits(seed=seed)
        base = digits_cnn()
        _numpy_start(base, seed)
        _fit_in_order(base, x_train, y_train, epochs=BASELINE_EPOCHS, seed=seed)

    def finetune(model):
        if start == "own":
            return finetune_digits(model, x_train, y_train, seed)
        keras.utils.set_random_seed(seed)
        return _fit_in_order(compile_for_digits(model), x_train, y_train,
                             epochs=FINETUNE_EPOCHS, seed=seed + 1000)

    def row(name, model, **export):
        t0 = time.perf_counter()
        content = to_litert(model, **export)
        line = {"seed": seed, "start": start, "row": name, **litert_metrics(content, x_test, y_test),
                "export_s": round(time.perf_counter() - t0, 1)}
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
    parser.add_argument("--start", choices=["same", "own"], default="same",
                        help="same: NumPy-drawn initial weights and batch order, alike on "
                             "every backend; own: each backend's seeded RNG (accuracy)")
    parser.add_argument("--samples", type=int, default=1024, help="images per epoch (speed)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per model (speed)")
    args = parser.parse_args()
    if args.part == "speed":
        speed(args.samples, args.rounds)
    else:
        for seed in (int(s) for s in args.seeds.split(",")):
            accuracy(seed, args.start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
