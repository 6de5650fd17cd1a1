"""Weight clustering on the digits protocol (../shared/BENCHMARKS.md, task D).

Prints JSON lines: 16 (the target row), 8 and 4 clusters with k-means++ init
(16 also with the other inits), 5 fine-tuning epochs, stripped and exported to
float LiteRT: accuracy, bytes, gzip bytes, unique values per kernel; then the
epoch-time ratio of a clustered to a plain 32x32x3 CNN.

    python benchmarks/clustering.py [--seeds 0] [--skip-timing] [--baseline-weights DIR]

`--baseline-weights DIR` starts each seed from ``DIR/baseline_seed{seed}.npz`` (the
baseline's weights as saved by `benchmarks/tfmot_reference.py --save-baselines DIR`)
instead of training it: kmot and tfmot then fine-tune the very same model.
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


def load_baseline(directory: str, seed: int):
    """The digits CNN holding the weights saved for `seed`, and that seed's data split."""
    import numpy as np

    from kmot.data import digits, digits_cnn

    saved = np.load(os.path.join(directory, f"baseline_seed{seed}.npz"))
    base = digits_cnn()
    base.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    return base, digits(seed=seed)


def run_seed(seed: int, baseline_weights: str | None = None) -> None:
    import keras

    from kmot import clustering
    from kmot.demo import train_digits_baseline
    from kmot.export import to_litert

    base, (x_train, y_train, x_test, y_test) = (
        load_baseline(baseline_weights, seed) if baseline_weights
        else train_digits_baseline(seed=seed))
    dense = litert_metrics(to_litert(base), x_test, y_test)
    start = {"baseline": "saved" if baseline_weights else "trained"}
    print(json.dumps({"benchmark": "clustering_digits", "seed": seed, **start, "variant": "dense", **dense}),
          flush=True)
    variants = [(16, "kmeans++"), (8, "kmeans++"), (4, "kmeans++"),
                (16, "linear"), (16, "density"), (16, "random")]
    for k, init in variants:
        keras.utils.set_random_seed(seed)
        model = compile_for_digits(clustering.cluster_weights(
            base, number_of_clusters=k, cluster_centroids_init=init))
        model.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
        final = clustering.strip_clustering(model)
        line = {"benchmark": "clustering_digits", "seed": seed, **start, "clusters": k, "init": init,
                **litert_metrics(to_litert(final), x_test, y_test, dense["gzip_bytes"]),
                "max_unique_per_kernel": max(w.unique_values for w in clustering.summary(final).weights)}
        if (k, init) == (16, "kmeans++"):
            line["pass"] = line["accuracy"] >= 0.98 and line["gzip_bytes"] <= 26_844
        print(json.dumps(line), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--baseline-weights", metavar="DIR",
                        help="start from DIR/baseline_seed{seed}.npz instead of training")
    args = parser.parse_args()
    if args.baseline_weights:
        missing = [f"baseline_seed{s}.npz" for s in args.seeds if not os.path.isfile(
            os.path.join(args.baseline_weights, f"baseline_seed{s}.npz"))]
        if missing:
            print(f"--baseline-weights {args.baseline_weights}: no {', '.join(missing)}. Save them with "
                  "`python benchmarks/tfmot_reference.py --seeds ... --save-baselines DIR`.", file=sys.stderr)
            return 2
    for seed in args.seeds:
        run_seed(seed, args.baseline_weights)
    if not args.skip_timing:
        from kmot import clustering

        print_epoch_time("clustering_epoch_time", lambda: clustering.cluster_weights(
            conv_net_32(), number_of_clusters=16), 1.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
