"""Shared pieces of the benchmark scripts: the digits protocol and timing.

The protocol is ../shared/BENCHMARKS.md, task D: a baseline trained 15 epochs,
then 5 fine-tuning epochs per technique at batch 64 with Adam(1e-3).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

BATCH = 64
FINETUNE_EPOCHS = 5


def compile_for_digits(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def finetune_digits(model, x_train, y_train, seed: int):
    """The digits protocol's fine-tuning: FINETUNE_EPOCHS at the protocol's settings."""
    import keras

    keras.utils.set_random_seed(seed)
    compile_for_digits(model).fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS,
                                  verbose=0)
    return model


def finetune_steps(n_train: int, epochs: int = FINETUNE_EPOCHS) -> int:
    return epochs * int(np.ceil(n_train / BATCH))


def litert_metrics(content: bytes, x_test, y_test, dense_gzip: int | None = None) -> dict:
    """Accuracy in the LiteRT interpreter, bytes, gzip bytes (and ratio to dense)."""
    from kmot.export import LiteRTModel, inspect

    info = inspect(content)
    acc = float(np.mean(LiteRTModel(content).predict(x_test, batch_size=64).argmax(-1) == y_test))
    out = {"accuracy": round(acc, 4), "bytes": info.size_bytes, "gzip_bytes": info.gzip_bytes}
    if dense_gzip:
        out["gzip_ratio_vs_dense_float"] = round(info.gzip_bytes / dense_gzip, 4)
    return out


def conv_net_32():
    """The 32x32x3 CNN of the training-overhead protocol: 3 conv + 2 dense."""
    import keras

    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])


def _epoch_clock():
    """A callback that keeps the wall and CPU seconds from the start to the end of the
    last epoch: the epoch's own steps, without what `fit` sets up around them (on
    TensorFlow 0.1-0.3 s a call, varying from call to call: a third of a small epoch)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.wall = time.perf_counter() - self.start[0]
            self.cpu = time.process_time() - self.start[1]

    return EpochClock()


def alternating_epochs(models: dict, x, y, *, rounds: int) -> tuple[dict, dict]:
    """Median wall and CPU seconds of one epoch per model, the models alternating.

    Each model first runs one epoch (tracing, warm-up); then epochs alternate
    between the models `rounds` times so machine noise hits all alike. CPU
    seconds of the process are the work done, whatever share of the 2 cores the
    scheduler gave each epoch (wall times here vary with that share, up to 2x).
    An epoch is timed from its start to its end (`_epoch_clock`).
    """
    import keras

    for m in models.values():
        m.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    wall = {k: [] for k in models}
    cpu = {k: [] for k in models}
    for _ in range(rounds):
        for name, m in models.items():
            clock = _epoch_clock()
            m.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[clock])
            wall[name].append(clock.wall)
            cpu[name].append(clock.cpu)
    return ({k: float(np.median(v)) for k, v in wall.items()},
            {k: float(np.median(v)) for k, v in cpu.items()})


def epoch_time_ratio(make_plain, make_wrapped, *, samples: int = 2048, rounds: int = 3) -> dict:
    """Median epoch time of a wrapped model over a plain one, measured alternately."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=samples)
    wall, cpu = alternating_epochs({"plain": make_plain(), "wrapped": make_wrapped()}, x, y,
                                   rounds=rounds)
    return {"plain_epoch_s": round(wall["plain"], 3), "wrapped_epoch_s": round(wall["wrapped"], 3),
            "ratio": round(wall["wrapped"] / wall["plain"], 3),
            "cpu_ratio": round(cpu["wrapped"] / cpu["plain"], 3)}


def print_epoch_time(benchmark: str, make_wrapped, limit: float) -> None:
    """Prints the JSON line of the wrapped / plain epoch-time ratio on the 32x32x3 CNN."""
    import json

    ratio = epoch_time_ratio(conv_net_32, make_wrapped)
    print(json.dumps({"benchmark": benchmark, **ratio, "pass": ratio["ratio"] <= limit}), flush=True)
