"""Knowledge distillation on digits and MNIST-1D (kmot.distillation.distill).

Prints JSON lines. Per dataset and seed: the teacher; a student with about half
its parameters trained alone and distilled from the teacher (same epochs,
optimizer, batch size, initial weights and seeds; only the loss differs);
the teacher pruned to 80% and fine-tuned alone and with the teacher's guidance.
Every model is exported with `to_litert` (float32) and measured in the LiteRT
interpreter on the test set. Then the mean over seeds per dataset.

- digits: the task D baseline (`digits_cnn`, 15 epochs, Adam 1e-3, batch 64) as
  teacher; students train 15 epochs. Pruning: the task D protocol (5 epochs,
  PolynomialDecay 0 -> 0.8 over 70% of the steps, 20 mask updates).
- MNIST-1D (4000 train / 1000 test, generated locally): a Conv1D teacher
  trained 30 epochs; students train 30 epochs; pruning as for digits.

    python benchmarks/distillation.py [--seeds 0 1 2] [--temperature 4] [--alpha 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import BATCH, FINETUNE_EPOCHS, compile_for_digits, finetune_steps, litert_metrics  # noqa: E402

import numpy as np  # noqa: E402


def digits_student():
    """The digits CNN with half the filters and hidden units where it matters:
    42,026 parameters, 0.50 of the baseline's 84,010."""
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        L.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        L.Conv2D(32, 3, activation="relu", name="conv2"),
        L.Flatten(name="flatten"),
        L.Dense(32, activation="relu", name="dense1"),
        L.Dense(10, name="logits"),
    ], name="digits_student")


def mnist1d_teacher():
    """Conv1D x3 with max pooling, Dense(64): 64,522 parameters."""
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((40, 1), name="signal"),
        L.Conv1D(32, 5, padding="same", activation="relu", name="conv1"),
        L.Conv1D(64, 5, padding="same", activation="relu", name="conv2"),
        L.MaxPooling1D(2, name="pool1"),
        L.Conv1D(64, 3, padding="same", activation="relu", name="conv3"),
        L.MaxPooling1D(2, name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(64, activation="relu", name="dense1"),
        L.Dense(10, name="logits"),
    ], name="mnist1d_teacher")


def mnist1d_student():
    """The teacher with 32 filters throughout and Dense(72): 32,290 parameters (0.50)."""
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((40, 1), name="signal"),
        L.Conv1D(32, 5, padding="same", activation="relu", name="conv1"),
        L.Conv1D(32, 5, padding="same", activation="relu", name="conv2"),
        L.MaxPooling1D(2, name="pool1"),
        L.Conv1D(32, 3, padding="same", activation="relu", name="conv3"),
        L.MaxPooling1D(2, name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(72, activation="relu", name="dense1"),
        L.Dense(10, name="logits"),
    ], name="mnist1d_student")


def _teacher(dataset: str, seed: int):
    import keras

    from kmot.data import mnist1d

    if dataset == "digits":
        from kmot.demo import train_digits_baseline

        model, data = train_digits_baseline(epochs=15, seed=seed)
        return model, data, digits_student, 15
    keras.utils.set_random_seed(seed)
    data = mnist1d()
    model = compile_for_digits(mnist1d_teacher())
    model.fit(data[0], data[1], batch_size=BATCH, epochs=30, verbose=0)
    return model, data, mnist1d_student, 30


def run(dataset: str, seed: int, temperature: float, alpha: float) -> dict[str, float]:
    import keras

    from kmot import sparsity
    from kmot.distillation import distill
    from kmot.export import to_litert

    teacher, (x, y, x_test, y_test), make_student, epochs = _teacher(dataset, seed)
    accuracies = {}

    def emit(variant, model, **extra):
        line = {"benchmark": "distillation", "dataset": dataset, "seed": seed,
                "variant": variant, **extra, **litert_metrics(to_litert(model), x_test, y_test)}
        accuracies[variant] = line["accuracy"]
        print(json.dumps(line), flush=True)
        return line

    emit("teacher", teacher, params=teacher.count_params(), epochs=epochs)

    keras.utils.set_random_seed(seed)
    initial = make_student().get_weights()  # both students start from these weights

    def student():
        model = make_student()
        model.set_weights(initial)
        keras.utils.set_random_seed(seed + 1)  # the same seed for both fits
        return compile_for_digits(model)

    ratio = round(student().count_params() / teacher.count_params(), 3)
    alone = student()
    alone.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    emit("student_alone", alone, params=alone.count_params(), params_ratio=ratio, epochs=epochs)
    distilled = distill(student(), teacher, x, y, epochs=epochs, batch_size=BATCH,
                        temperature=temperature, alpha=alpha)
    line = emit("student_distilled", distilled, params=distilled.count_params(),
                params_ratio=ratio, epochs=epochs, temperature=temperature, alpha=alpha)
    print(json.dumps({"benchmark": "distillation_delta", "dataset": dataset, "seed": seed,
                      "what": "student", "distilled_minus_alone_pt":
                      round(100 * (line["accuracy"] - accuracies["student_alone"]), 2)}),
          flush=True)

    steps = finetune_steps(len(x))
    schedule = sparsity.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps),
                                        frequency=max(1, steps // 20))

    def pruned():
        keras.utils.set_random_seed(seed + 2)
        return compile_for_digits(sparsity.prune_low_magnitude(teacher, pruning_schedule=schedule))

    alone = pruned()
    alone.fit(x, y, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
    alone = sparsity.strip_pruning(alone)
    emit("pruned80_alone", alone, sparsity=round(sparsity.summary(alone).overall, 4),
         epochs=FINETUNE_EPOCHS)
    guided = sparsity.strip_pruning(distill(
        pruned(), teacher, x, y, epochs=FINETUNE_EPOCHS, batch_size=BATCH,
        temperature=temperature, alpha=alpha))
    line = emit("pruned80_distilled", guided, sparsity=round(sparsity.summary(guided).overall, 4),
                epochs=FINETUNE_EPOCHS, temperature=temperature, alpha=alpha)
    print(json.dumps({"benchmark": "distillation_delta", "dataset": dataset, "seed": seed,
                      "what": "pruned80", "distilled_minus_alone_pt":
                      round(100 * (line["accuracy"] - accuracies["pruned80_alone"]), 2)}),
          flush=True)
    return accuracies


def summarize(dataset: str, seeds: list[int], runs: list[dict[str, float]]) -> None:
    mean = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
    wins = {what: sum(r[f"{what}_distilled"] > r[f"{what}_alone"] for r in runs)
            for what in ("student", "pruned80")}
    print(json.dumps({
        "benchmark": "distillation_mean", "dataset": dataset, "seeds": seeds,
        **{f"mean_{k}": v for k, v in mean.items()},
        "student_distilled_better_on": f"{wins['student']}/{len(runs)} seeds",
        "pruned80_distilled_better_on": f"{wins['pruned80']}/{len(runs)} seeds",
        "pass": mean["student_distilled"] > mean["student_alone"],
    }), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"],
                        choices=["digits", "mnist1d"])
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.1)
    args = parser.parse_args()
    for dataset in args.datasets:
        runs = [run(dataset, seed, args.temperature, args.alpha) for seed in args.seeds]
        summarize(dataset, args.seeds, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
