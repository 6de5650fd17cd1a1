"""Magnitude pruning on the digits protocol (../shared/BENCHMARKS.md, task D).

Prints JSON lines: the dense baseline, 80% (the target row), 90%, 95% and 2:4
sparsity after 5 fine-tuning epochs, each stripped and exported to float LiteRT
(accuracy in the interpreter, bytes, gzip bytes vs the dense float file), then the
epoch-time ratio of a pruned to a plain 32x32x3 CNN.

    python benchmarks/pruning.py [--seeds 0 1 2] [--skip-timing]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _common import (
    BATCH, FINETUNE_EPOCHS, compile_for_digits, conv_net_32, finetune_steps, litert_metrics,
    print_epoch_time,
)


def run_seed(seed: int) -> None:
    import keras

    from kmot import sparsity
    from kmot.demo import train_digits_baseline
    from kmot.export import check_tflite_pattern, to_litert

    base, (x_train, y_train, x_test, y_test) = train_digits_baseline(seed=seed)
    dense = litert_metrics(to_litert(base), x_test, y_test)
    print(json.dumps({"benchmark": "pruning_digits", "seed": seed, "variant": "dense", **dense}),
          flush=True)
    steps = finetune_steps(len(x_train))
    frequency = max(1, steps // 20)
    variants = {
        "80%": {"pruning_schedule": sparsity.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps), frequency=frequency)},
        "80% global": {"pruning_schedule": sparsity.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps), frequency=frequency),
                       "sparsity_allocation": "global"},
        "90%": {"pruning_schedule": sparsity.PolynomialDecay(0.0, 0.9, 0, int(0.7 * steps), frequency=frequency)},
        "95%": {"pruning_schedule": sparsity.PolynomialDecay(0.0, 0.95, 0, int(0.7 * steps), frequency=frequency)},
        "90% global": {"pruning_schedule": sparsity.PolynomialDecay(0.0, 0.9, 0, int(0.7 * steps), frequency=frequency),
                       "sparsity_allocation": "global"},
        "95% global": {"pruning_schedule": sparsity.PolynomialDecay(0.0, 0.95, 0, int(0.7 * steps), frequency=frequency),
                       "sparsity_allocation": "global"},
        "2:4": {"pruning_schedule": sparsity.ConstantSparsity(0.5, 0, frequency=frequency),
                "sparsity_m_by_n": (2, 4)},
    }
    for name, kwargs in variants.items():
        keras.utils.set_random_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 2:4 skips conv1 (1 input channel)
            pruned = compile_for_digits(sparsity.prune_low_magnitude(base, **kwargs))
        pruned.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0,
                   callbacks=[sparsity.UpdatePruningStep()])
        final = sparsity.strip_pruning(pruned)
        content = to_litert(final)
        line = {"benchmark": "pruning_digits", "seed": seed, "variant": name,
                "sparsity": round(sparsity.summary(final).overall, 4),
                **litert_metrics(content, x_test, y_test, dense["gzip_bytes"])}
        if name == "2:4":
            checks = check_tflite_pattern(content, sparsity_m_by_n=(2, 4))
            line["pattern_ok_weights"] = f"{sum(c.ok for c in checks)}/{len(checks)}"
        if name.startswith("80%"):
            line["pass"] = line["accuracy"] >= 0.98 and line["gzip_ratio_vs_dense_float"] <= 0.30
        if name == "2:4":
            line["pass"] = line["accuracy"] >= 0.975
        print(json.dumps(line), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    for seed in args.seeds:
        run_seed(seed)
    if not args.skip_timing:
        from kmot import sparsity

        print_epoch_time("pruning_epoch_time", lambda: sparsity.prune_low_magnitude(
            conv_net_32(), pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=100)), 1.25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
