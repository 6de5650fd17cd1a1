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

The ``gradual`` row prunes the same 50% by l2 gradually (`mask_channels`): the
masks ramp from 0 to 50% over the first ``--gradual-ramp-epochs`` (default 1) of
the same ``--finetune-epochs`` budget (PolynomialDecay, an update every
``--gradual-frequency`` steps), training continues masked to the end of the
budget, then `remove_masked_channels` returns the slim model (no training after
removal, so the budget equals one-shot's). It also reports the masked model's
accuracy and the largest output difference between the masked and slim models.
``--variants l2,gradual`` runs only those rows (the unpruned row always runs).

Fine-tuning recipes for the one-shot l2 model, each the same 5 epochs at batch 64
(``l2`` itself: Adam at a constant 1e-3):

- ``l2_cosine``: Adam with a cosine decay from ``--cosine-lr`` (default 5e-3) to 0
  over the budget.
- ``l2_bnrecal``: Adam(1e-3) constant, with the BatchNormalization moving
  statistics recalibrated right after pruning and again after fine-tuning (the
  mean of every training batch's statistics, one pass with training=True, no
  weight update). Reports the accuracy before and after each recalibration.
- ``l2_distill`` / ``l2_distill_cosine``: `kmot.distillation.distill` from the
  unpruned model as teacher (``--distill-temperature``, ``--distill-alpha``), with
  Adam(1e-3) constant / the cosine decay.
- ``unpruned_cosine``: a control, not a pruning: the unpruned model fine-tuned by
  ``l2_cosine``'s recipe, to see how much of a recipe's gain is not about pruning.

The unpruned row also reports ``accuracy_bn_recalibrated``: its accuracy with its
moving statistics recalibrated the same way (on a copy).

One fine-tuning run's final accuracy swings by several points with its seed
(Adam at a constant 1e-3 for 5 epochs): ``--finetune-seeds 1,2,3`` fine-tunes
each variant once per seed and adds the per-seed accuracies, mean and std.

With ``--applications``: keras.applications MobileNetV2 at 96x96 and ResNet50 at
64x64 (weights=None, untrained: speed does not depend on the weights' values),
pruned 30/50/70% by l2: parameters, MACs and the measured float and int8 speed-up
(int8 by post-training quantization, calibrated).

With ``--every-application``: the ten models of benchmarks/applications.py at
32x32x3 pruned by l2 at ``--sparsity``: parameters, MACs, channel groups and those
kept whole, warnings, and whether the pruned model runs to a finite output.

    python benchmarks/structured.py [--epochs 15] [--rounds 15] [--variants l2,l2_cosine]
                                    [--finetune-seeds 1,2,3] [--cosine-lr 5e-3]
                                    [--distill-temperature 1] [--distill-alpha 0.5]
                                    [--applications | --every-application]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

from harness import alternating_p50s  # noqa: E402 - the shared timing protocol

# --variants name -> (what to start from: an importance or "unpruned", fine-tuning recipe)
ONE_SHOT = {
    "l2": ("l2", "constant"), "bn": ("bn", "constant"), "taylor": ("taylor", "constant"),
    "l2_cosine": ("l2", "cosine"), "l2_bnrecal": ("l2", "bnrecal"),
    "l2_distill": ("l2", "distill"), "l2_distill_cosine": ("l2", "distill_cosine"),
    "bn_cosine": ("bn", "cosine"), "taylor_cosine": ("taylor", "cosine"),
    "unpruned_cosine": ("unpruned", "cosine"),
}
VARIANTS = (*ONE_SHOT, "gradual")


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


def recalibrate_batch_norm(model, x, batch_size: int = 64) -> None:
    """Sets every BatchNormalization's moving statistics to the mean of its batch
    statistics over `x`: one pass with training=True, no weight update."""
    import keras

    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(x), batch_size)):
            for layer in layers:  # k / (k + 1): a running mean over the batches, from batch 0
                layer.momentum = k / (k + 1)
            model(x[start:start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def one_shot(base, variant, x, y, x_test, y_test, args):
    """Prunes `base` by the variant's importance (or copies it) and fine-tunes it by its recipe."""
    import math

    import keras

    from kmot import sparsity
    from kmot.distillation import distill

    start_from, recipe = ONE_SHOT[variant]
    if start_from == "unpruned":
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
    else:
        model = sparsity.prune_channels(base, sparsity=args.sparsity, importance=start_from,
                                        data=(x[:256], y[:256]))
    row = {"accuracy_before_finetune": _accuracy(model, x_test, y_test)}
    if recipe == "bnrecal":
        recalibrate_batch_norm(model, x)
        row["accuracy_before_finetune_bn_recalibrated"] = _accuracy(model, x_test, y_test)
    epochs = args.finetune_epochs
    if recipe in ("cosine", "distill_cosine"):
        steps = epochs * math.ceil(len(x) / 64)
        optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.cosine_lr, steps))
        schedule = f"Adam(CosineDecay({args.cosine_lr:g} -> 0 over {steps} steps))"
    else:
        optimizer, schedule = keras.optimizers.Adam(1e-3), "Adam(1e-3) constant"
    if recipe.startswith("distill"):
        distill(model, base, x, y, epochs=epochs, batch_size=64, optimizer=optimizer,
                temperature=args.distill_temperature, alpha=args.distill_alpha)
        how = (f"distill from the unpruned model (temperature {args.distill_temperature:g}, "
               f"alpha {args.distill_alpha:g}), {schedule}")
    else:
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
        how = f"fit, {schedule}"
    row["finetune"] = f"{how}, {epochs} epochs, batch 64"
    if recipe == "bnrecal":
        row["accuracy_before_bn_recalibration"] = _accuracy(model, x_test, y_test)
        recalibrate_batch_norm(model, x)
        row["finetune"] += ("; BatchNormalization statistics recalibrated after pruning and "
                            "after fine-tuning")
    return model, row


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
        p50 = alternating_p50s(contents, calibration, rounds, runs=10)
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


EVERY_APPLICATION = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
                     "EfficientNetB0", "EfficientNetV2B0", "ResNet50", "DenseNet121",
                     "NASNetMobile", "ConvNeXtTiny")


def every_application(sparsity_level: float) -> None:
    """The applications benchmark's ten models (32x32x3, weights=None, 10 classes) pruned
    by l2 channels: parameters and MACs before and after, the layers kept whole, and the
    largest output of the pruned model on random inputs (it runs, and stays finite)."""
    import warnings

    import keras
    import numpy as np

    from kmot import sparsity
    from kmot.core.cost import macs

    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    for name in EVERY_APPLICATION:
        keras.utils.set_random_seed(0)
        base = getattr(keras.applications, name)(input_shape=(32, 32, 3), weights=None,
                                                 classes=10)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            slim = sparsity.prune_channels(base, sparsity=sparsity_level)
        seconds = time.perf_counter() - start
        out = keras.ops.convert_to_numpy(slim(x, training=False))
        groups = sparsity.channel_groups(base)
        print(json.dumps({
            "benchmark": "structured", "model": name, "variant": f"l2 {sparsity_level:.0%}",
            "params": [base.count_params(), slim.count_params()],
            "params_ratio": round(slim.count_params() / base.count_params(), 3),
            "macs": [macs(base), macs(slim)], "mac_reduction": round(macs(base) / macs(slim), 2),
            "groups": len(groups), "groups_kept_whole": sum(not g.prunable for g in groups),
            # kmot's own warnings (Keras's numpy-2 DeprecationWarnings left out)
            "warnings": [str(w.message)[:200] for w in caught
                         if not issubclass(w.category, DeprecationWarning)],
            "output_finite": bool(np.isfinite(out).all()), "output_shape": list(out.shape),
            "prune_seconds": round(seconds, 1),
        }), flush=True)


def gradual(base, x, y, x_test, y_test, args):
    """l2 channel masks ramped over the first epochs of the fine-tuning budget, then removed."""
    import math

    import numpy as np

    from kmot import sparsity

    steps_per_epoch = math.ceil(len(x) / 64)
    ramp = max(int(args.gradual_ramp_epochs * steps_per_epoch) - 1, 0)
    schedule = sparsity.PolynomialDecay(0.0, args.sparsity, begin_step=0, end_step=ramp,
                                        frequency=args.gradual_frequency)
    masked = _compile(sparsity.mask_channels(base, pruning_schedule=schedule, importance="l2"))
    masked.fit(x, y, epochs=args.finetune_epochs, batch_size=64, verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    slim = sparsity.remove_masked_channels(masked)
    difference = float(np.max(np.abs(masked.predict(x_test, verbose=0)
                                     - slim.predict(x_test, verbose=0))))
    return slim, {"accuracy_masked": _accuracy(masked, x_test, y_test),
                  "max_output_difference_masked_vs_removed": float(f"{difference:.2g}"),
                  "budget": f"{args.finetune_epochs} epochs masked (ramp over the first "
                            f"{args.gradual_ramp_epochs:g}, an update every "
                            f"{args.gradual_frequency} steps), then removed, 0 epochs after"}


def _label(variant: str, sparsity: float) -> str:
    """'l2 50%', 'l2 gradual 50%', 'l2 50% cosine', 'unpruned cosine'."""
    if variant == "gradual":
        return f"l2 gradual {sparsity:.0%}"
    start_from, recipe = ONE_SHOT[variant]
    label = "unpruned" if start_from == "unpruned" else f"{start_from} {sparsity:.0%}"
    return label if recipe == "constant" else f"{label} {recipe}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="baseline epochs")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--variants", default="l2,bn,taylor,gradual,l2_cosine",
                        help=f"comma-separated rows among {', '.join(VARIANTS)}")
    parser.add_argument("--gradual-ramp-epochs", type=float, default=1,
                        help="gradual: epochs over which the masks ramp to --sparsity")
    parser.add_argument("--gradual-frequency", type=int, default=1,
                        help="gradual: steps between mask updates")
    parser.add_argument("--cosine-lr", type=float, default=5e-3,
                        help="*_cosine: the peak (initial) learning rate of the cosine decay")
    parser.add_argument("--distill-temperature", type=float, default=1.0)
    parser.add_argument("--distill-alpha", type=float, default=0.5,
                        help="l2_distill*: weight of the hard-label loss (the teacher's: 1 - alpha)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the baseline's training")
    parser.add_argument("--finetune-seeds", default="",
                        help="comma-separated seeds: each variant is fine-tuned once per seed "
                             "(set just before) and reports its accuracy per seed, mean and std; "
                             "speed and int8 come from the first. Default: one run, not reseeded")
    parser.add_argument("--applications", action="store_true",
                        help="only MobileNetV2 (96x96) and ResNet50 (64x64) at 30/50/70%%")
    parser.add_argument("--every-application", action="store_true",
                        help="only the structure of the ten keras.applications models at "
                             "--sparsity (params, MACs, groups; no timing)")
    args = parser.parse_args()
    if args.every_application:
        every_application(args.sparsity)
        return
    if args.applications:
        applications((0.3, 0.5, 0.7), args.rounds)
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown --variants {unknown}; expected among {', '.join(VARIANTS)}")

    import keras
    import numpy as np

    from kmot import quantization
    from kmot.core.cost import macs
    from kmot.data import digits
    from kmot.export import to_litert

    keras.utils.set_random_seed(args.seed)
    x, y, x_test, y_test = digits(image_size=32, channels=3)
    base = _compile(se_net())
    base.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)

    def int8(model):
        qat = _compile(quantization.quantize_model(model))
        qat.optimizer.learning_rate.assign(1e-4)
        qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
        return to_litert(qat)

    contents = {"base/float": to_litert(base), "base/int8": int8(base)}
    def finetune(variant):
        start = time.perf_counter()
        if variant == "gradual":
            pruned, row = gradual(base, x, y, x_test, y_test, args)
        else:
            pruned, row = one_shot(base, variant, x, y, x_test, y_test, args)
        return pruned, {**row, "accuracy": _accuracy(pruned, x_test, y_test),
                        "prune_and_finetune_s": round(time.perf_counter() - start, 1)}

    seeds = [int(s) for s in args.finetune_seeds.split(",") if s.strip()] or [None]
    rows = {}
    for variant in variants:
        runs = []
        for seed in seeds:
            if seed is not None:
                keras.utils.set_random_seed(seed)
            runs.append(finetune(variant))
        pruned, row = runs[0]
        if len(runs) > 1:
            accuracies = [r["accuracy"] for _, r in runs]
            row.update({"finetune_seeds": seeds, "accuracy_per_seed": accuracies,
                        "accuracy_mean": round(float(np.mean(accuracies)), 4),
                        "accuracy_std": round(float(np.std(accuracies)), 4)})
        rows[variant] = {"params": pruned.count_params(), "macs": macs(pruned), **row}
        contents[f"{variant}/float"] = to_litert(pruned)
        contents[f"{variant}/int8"] = int8(pruned)
    p50 = alternating_p50s(contents, x_test, args.rounds)
    recalibrated = keras.models.clone_model(base)
    recalibrated.set_weights(base.get_weights())
    recalibrate_batch_norm(recalibrated, x)
    base_row = {"params": base.count_params(), "macs": macs(base),
                "accuracy": _accuracy(base, x_test, y_test),
                "accuracy_bn_recalibrated": _accuracy(recalibrated, x_test, y_test),
                "p50_ms_float": round(p50["base/float"], 4), "p50_ms_int8": round(p50["base/int8"], 4)}
    print(json.dumps({"benchmark": "structured", "model": "se_net_32", "variant": "unpruned",
                      **base_row}), flush=True)
    for importance, row in rows.items():
        mac_reduction = base_row["macs"] / row["macs"]
        speedups = {mode: p50[f"base/{mode}"] / p50[f"{importance}/{mode}"] for mode in ("float", "int8")}
        print(json.dumps({
            "benchmark": "structured", "model": "se_net_32",
            "variant": _label(importance, args.sparsity),
            **row, "accuracy_drop_pt": round(100 * (base_row["accuracy"] - row["accuracy"]), 2),
            **({"accuracy_drop_pt_mean": round(100 * (base_row["accuracy"] - row["accuracy_mean"]), 2)}
               if "accuracy_mean" in row else {}),
            "mac_reduction": round(mac_reduction, 3),
            "speedup_float": round(speedups["float"], 3), "speedup_int8": round(speedups["int8"], 3),
            "speedup_per_mac_reduction": {m: round(s / mac_reduction, 3) for m, s in speedups.items()},
        }), flush=True)


if __name__ == "__main__":
    main()
