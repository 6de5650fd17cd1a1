"""Knowledge distillation on digits and MNIST-1D (kmot.distillation.distill).

Prints JSON lines. Per dataset and seed:

- ``teacher``: the baseline as the protocol trains it. digits: the task D
  baseline (`digits_cnn`, 84,010 parameters, 15 epochs); MNIST-1D: a Conv1D
  net (64,522 parameters, 30 epochs). Adam(1e-3), batch 64.
- ``teacher_ensemble``: three models of the baseline's architecture, each
  trained 60 epochs on augmented inputs (digits: random 1-pixel shifts;
  MNIST-1D: random shifts of up to 3 steps and Gaussian noise 0.1), logits
  averaged: the classic teacher of Hinton et al. (2015), an ensemble distilled
  into one small model.
- A student with half the baseline's parameters, trained 30 epochs alone and
  distilled, from each teacher in turn: same initial weights, optimizer
  (Adam 1e-3), batch size (64), seeds and plain (not augmented) training data;
  only the loss differs. The acceptance row is ``student_distilled`` (from the
  ensemble) against ``student_alone``.
- The baseline pruned to 80% (task D protocol: 5 epochs, PolynomialDecay
  0 -> 0.8 over 70% of the steps, 20 mask updates), fine-tuned alone and with
  the ensemble's guidance.

Every model is exported with `to_litert` (float32) and measured in the LiteRT
interpreter on the test set; then the means over seeds per dataset.
Temperature 4 and alpha 0.5 (Keras's default student_loss_weight) are the
library defaults, not tuned on these test sets.

    python benchmarks/distillation.py [--seeds 0 1 2] [--datasets digits mnist1d]
                                      [--temperature 4] [--alpha 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(__file__))
from _common import (  # noqa: E402
    BATCH, FINETUNE_EPOCHS, compile_for_digits, finetune_steps, litert_metrics,
)

import numpy as np  # noqa: E402

STUDENT_EPOCHS = 30
ENSEMBLE_EPOCHS = 60
ENSEMBLE_SIZE = 3


def digits_student():
    """The digits CNN with conv1 and dense1 halved: 42,026 parameters (0.50 of 84,010)."""
    from kmot.data import digits_cnn

    return digits_cnn(filters=(16, 32), units=32, compile=False, name="digits_student")


def _mnist1d_cnn(filters: tuple[int, int, int], units: int, name: str):
    """Conv1D x3 (kernels 5, 5, 3) with max pooling after the 2nd and 3rd, Dense(units)."""
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((40, 1), name="signal"),
        L.Conv1D(filters[0], 5, padding="same", activation="relu", name="conv1"),
        L.Conv1D(filters[1], 5, padding="same", activation="relu", name="conv2"),
        L.MaxPooling1D(2, name="pool1"),
        L.Conv1D(filters[2], 3, padding="same", activation="relu", name="conv3"),
        L.MaxPooling1D(2, name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(units, activation="relu", name="dense1"),
        L.Dense(10, name="logits"),
    ], name=name)


def mnist1d_teacher():
    """Filters 32, 64, 64 and Dense(64): 64,522 parameters."""
    return _mnist1d_cnn((32, 64, 64), 64, "mnist1d_teacher")


def mnist1d_student():
    """The teacher with 32 filters throughout and Dense(72): 32,290 parameters (0.50)."""
    return _mnist1d_cnn((32, 32, 32), 72, "mnist1d_student")


def _shift_2d(x, y):
    import tensorflow as tf

    return tf.image.random_crop(tf.pad(x, [[1, 1], [1, 1], [0, 0]]), (8, 8, 1)), y


def _shift_noise_1d(x, y):
    import tensorflow as tf

    x = tf.roll(x, tf.random.uniform((), -3, 4, dtype=tf.int32), axis=0)
    return x + tf.random.normal(tf.shape(x), stddev=0.1), y


@dataclass(frozen=True)
class Task:
    load: Callable[[int], tuple]
    teacher: Callable[[], Any]
    student: Callable[[], Any]
    teacher_epochs: int
    augment: Callable


def _digits(seed):
    from kmot.data import digits

    return digits(seed=seed)  # the task D split for this seed


def _mnist1d(seed):
    from kmot.data import mnist1d

    return mnist1d()  # one fixed dataset; the seed varies the models


def _digits_teacher():
    from kmot.data import digits_cnn

    return digits_cnn(compile=False)


TASKS = {
    "digits": Task(_digits, _digits_teacher, digits_student, 15, _shift_2d),
    "mnist1d": Task(_mnist1d, mnist1d_teacher, mnist1d_student, 30, _shift_noise_1d),
}


def _teachers(task: Task, seed: int, x, y):
    """The baseline as the protocol trains it, and an ensemble of stronger ones."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    plain = compile_for_digits(task.teacher())
    plain.fit(x, y, batch_size=BATCH, epochs=task.teacher_epochs, verbose=0)
    members = []
    for i in range(ENSEMBLE_SIZE):
        member_seed = 1000 * (seed + 1) + i
        keras.utils.set_random_seed(member_seed)
        member = task.teacher()
        member.name = f"member_{i}"  # unique names inside the ensemble model
        augmented = (tf.data.Dataset.from_tensor_slices((x, y))
                     .shuffle(len(x), seed=member_seed).map(task.augment).batch(BATCH))
        compile_for_digits(member).fit(augmented, epochs=ENSEMBLE_EPOCHS, verbose=0)
        members.append(member)
    inputs = keras.Input(x.shape[1:], name=plain.inputs[0].name)
    ensemble = keras.Model(inputs, keras.layers.Average(name="mean_logits")(
        [m(inputs) for m in members]), name="teacher_ensemble")
    return plain, ensemble


def run(dataset: str, seed: int, temperature: float, alpha: float) -> dict[str, float]:
    import keras

    from kmot import sparsity
    from kmot.distillation import distill
    from kmot.export import to_litert

    task = TASKS[dataset]
    x, y, x_test, y_test = task.load(seed)
    teacher, ensemble = _teachers(task, seed, x, y)
    accuracy: dict[str, float] = {}
    kd = {"temperature": temperature, "alpha": alpha}

    def emit(variant, model, **extra):
        line = {"benchmark": "distillation", "dataset": dataset, "seed": seed,
                "variant": variant, **extra, **litert_metrics(to_litert(model), x_test, y_test)}
        accuracy[variant] = line["accuracy"]
        print(json.dumps(line), flush=True)

    def delta(variant, reference):
        print(json.dumps({"benchmark": "distillation_delta", "dataset": dataset, "seed": seed,
                          "variant": variant, "vs": reference, "delta_pt":
                          round(100 * (accuracy[variant] - accuracy[reference]), 2)}), flush=True)

    emit("teacher", teacher, params=teacher.count_params(), epochs=task.teacher_epochs)
    emit("teacher_ensemble", ensemble, params=ensemble.count_params(), epochs=ENSEMBLE_EPOCHS,
         members=ENSEMBLE_SIZE, augmented=True)

    keras.utils.set_random_seed(seed)
    initial = task.student().get_weights()  # every student starts from these weights

    def student():
        model = task.student()
        model.set_weights(initial)
        keras.utils.set_random_seed(seed + 1)  # the same seed for every student's training
        return compile_for_digits(model)

    params = student().count_params()
    size = {"params": params, "params_ratio": round(params / teacher.count_params(), 3),
            "epochs": STUDENT_EPOCHS}
    alone = student()
    alone.fit(x, y, batch_size=BATCH, epochs=STUDENT_EPOCHS, verbose=0)
    emit("student_alone", alone, **size)
    for variant, guide in (("student_distilled", ensemble),
                           ("student_distilled_from_baseline", teacher)):
        emit(variant, distill(student(), guide, x, y, epochs=STUDENT_EPOCHS, batch_size=BATCH,
                              temperature=temperature, alpha=alpha), **size, **kd)
        delta(variant, "student_alone")

    steps = finetune_steps(len(x))
    schedule = sparsity.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps),
                                        frequency=max(1, steps // 20))

    def pruned():
        keras.utils.set_random_seed(seed + 2)
        return compile_for_digits(sparsity.prune_low_magnitude(teacher, pruning_schedule=schedule))

    def emit_pruned(variant, model, **extra):
        final = sparsity.strip_pruning(model)
        emit(variant, final, sparsity=round(sparsity.summary(final).overall, 4),
             epochs=FINETUNE_EPOCHS, **extra)

    alone = pruned()
    alone.fit(x, y, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
    emit_pruned("pruned80_alone", alone)
    emit_pruned("pruned80_distilled", distill(pruned(), ensemble, x, y, epochs=FINETUNE_EPOCHS,
                                              batch_size=BATCH, temperature=temperature,
                                              alpha=alpha), **kd)
    delta("pruned80_distilled", "pruned80_alone")
    return accuracy


def summarize(dataset: str, seeds: list[int], runs: list[dict[str, float]]) -> None:
    mean = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
    better = {f"{v}_better_on": f"{sum(r[v] > r[ref] for r in runs)}/{len(runs)} seeds"
              for v, ref in (("student_distilled", "student_alone"),
                             ("student_distilled_from_baseline", "student_alone"),
                             ("pruned80_distilled", "pruned80_alone"))}
    print(json.dumps({
        "benchmark": "distillation_mean", "dataset": dataset, "seeds": seeds,
        **{f"mean_{k}": v for k, v in mean.items()}, **better,
        "student_distilled_minus_alone_pt": round(
            100 * (mean["student_distilled"] - mean["student_alone"]), 2),
        "pass": mean["student_distilled"] > mean["student_alone"],
    }), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()
    for dataset in args.datasets:
        runs = [run(dataset, seed, args.temperature, args.alpha) for seed in args.seeds]
        summarize(dataset, args.seeds, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
