"""Weight clustering on the digits protocol (../shared/BENCHMARKS.md, task D).

Prints JSON lines: 16 (the target row), 8 and 4 clusters with k-means++ init
(16 also with the other inits), 5 fine-tuning epochs, stripped and exported to
float LiteRT: accuracy, bytes, gzip bytes, unique values per kernel; then the
epoch-time ratio of a clustered to a plain 32x32x3 CNN.

    python benchmarks/clustering.py [--seeds 0] [--skip-timing]
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


def run_seed(seed: int) -> None:
    import keras

    from kmot import clustering
    from kmot.demo import train_digits_baseline
    from kmot.export import to_litert

    base, (x_train, y_train, x_test, y_test) = train_digits_baseline(seed=seed)
    dense = litert_metrics(to_litert(base), x_test, y_test)
    print(json.dumps({"benchmark": "clustering_digits", "seed": seed, "variant": "dense", **dense}), flush=True)
    variants = [(16, "kmeans++"), (8, "kmeans++"), (4, "kmeans++"),
                (16, "linear"), (16, "density"), (16, "random")]
    for k, init in variants:
        keras.utils.set_random_seed(seed)
        model = compile_for_digits(clustering.cluster_weights(
            base, number_of_clusters=k, cluster_centroids_init=init))
        model.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
        final = clustering.strip_clustering(model)
        line = {"benchmark": "clustering_digits", "seed": seed, "clusters": k, "init": init,
                **litert_metrics(to_litert(final), x_test, y_test, dense["gzip_bytes"]),
                "max_unique_per_kernel": max(w.unique_values for w in clustering.summary(final).weights)}
        if (k, init) == (16, "kmeans++"):
            line["pass"] = line["accuracy"] >= 0.98 and line["gzip_bytes"] <= 26_844
        print(json.dumps(line), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    for seed in args.seeds:
        run_seed(seed)
    if not args.skip_timing:
        from kmot import clustering

        print_epoch_time("clustering_epoch_time", lambda: clustering.cluster_weights(
            conv_net_32(), number_of_clusters=16), 1.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
