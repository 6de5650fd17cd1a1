"""Collaborative optimization on the digits protocol (../shared/BENCHMARKS.md, task D).

prune (80%, global allocation; `--allocation uniform` prunes 80% of each kernel, as
tfmot does) -> strip; cluster (16, k-means++) -> strip; prune -> strip -> cluster (16,
preserving sparsity) -> strip; then QAT preserving what each put in the weights
(PQAT, CQAT, PCQAT), 5 fine-tuning epochs per step, exported to int8 LiteRT (the
float pruned and pruned+clustered files are printed first). Prints JSON lines with
accuracy, bytes, gzip bytes, and what `inspect` finds in the int8 file: max unique
int8 values per channel of each kernel, and the share of the pruned zeros still zero.

    python benchmarks/collaborative.py [--seeds 0] [--allocation global|uniform]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import finetune_digits, finetune_steps, litert_metrics  # noqa: E402


def run_seed(seed: int, allocation: str = "global") -> None:
    import numpy as np

    from kmot import clustering, quantization, sparsity
    from kmot.demo import train_digits_baseline
    from kmot.export import inspect, to_litert

    base, (x_train, y_train, x_test, y_test) = train_digits_baseline(seed=seed)

    def finetune(model):
        return finetune_digits(model, x_train, y_train, seed)

    steps = finetune_steps(len(x_train))
    schedule = sparsity.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps), frequency=max(1, steps // 20))
    pruned = sparsity.strip_pruning(finetune(sparsity.prune_low_magnitude(
        base, pruning_schedule=schedule, sparsity_allocation=allocation)))
    clustered = clustering.strip_clustering(finetune(clustering.cluster_weights(
        base, number_of_clusters=16)))
    both = clustering.strip_clustering(finetune(clustering.cluster_weights(
        pruned, number_of_clusters=16, preserve_sparsity=True)))
    for name, model in (("pruned_80", pruned), ("pruned_80_clustered_16", both)):
        # Float files of the chain's first two steps (tfmot_reference.py prints tfmot's).
        print(json.dumps({"benchmark": "collaborative_digits", "seed": seed,
                          "allocation": allocation, "variant": name,
                          **litert_metrics(to_litert(model), x_test, y_test)}), flush=True)
    rows = {"PQAT": (pruned, {"preserve_sparsity": True}),
            "CQAT": (clustered, {"preserve_clusters": True}),
            "PCQAT": (both, {"preserve_sparsity": True, "preserve_clusters": True})}
    targets = {"PQAT": (0.98, 29_827), "CQAT": (0.98, 21_310), "PCQAT": (0.975, None)}
    gz = {}
    for name, (source, kwargs) in rows.items():
        qat = finetune(quantization.quantize_model(source, **kwargs))
        content = to_litert(qat)
        info = inspect(content)
        kernels = [w for w in info.weights if not w.is_bias]
        source_zeros = sum(int(np.sum(l.kernel.numpy() == 0)) for l in source.layers if hasattr(l, "kernel"))
        line = {"benchmark": "collaborative_digits", "seed": seed, "allocation": allocation,
                "variant": name,
                **litert_metrics(content, x_test, y_test),
                "float_ops": len(info.float_ops_between_io()),
                "max_unique_per_channel": [w.max_unique_per_channel for w in kernels],
                "zeros_kept": round(sum(w.zeros for w in kernels) / source_zeros, 4) if source_zeros else None}
        gz[name] = line["gzip_bytes"]
        acc, size = targets[name]
        line["pass"] = line["accuracy"] >= acc and (size is None or line["gzip_bytes"] <= size)
        if name == "PCQAT":
            line["pass"] = line["pass"] and gz["PCQAT"] < min(gz["PQAT"], gz["CQAT"])
        print(json.dumps(line), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--allocation", choices=["global", "uniform"], default="global",
                        help="pruning: 80%% of all kernels by magnitude, or 80%% of each")
    args = parser.parse_args()
    for seed in args.seeds:
        run_seed(seed, args.allocation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
