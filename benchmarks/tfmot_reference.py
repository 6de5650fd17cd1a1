"""tfmot 0.8.1 itself on the clustering rows of the digits protocol, on this machine.

The reference figures in ../shared/BENCHMARKS.md come from one run elsewhere. This
script re-measures tfmot's clustering (16 clusters, k-means++, 5 epochs) and
cluster-preserving QAT (5 more epochs, int8) with exactly the protocol of
`benchmarks/clustering.py` and `benchmarks/collaborative.py`: the same data
split per seed, the same architecture, Adam(1e-3), batch 64, the same LiteRT
accuracy and gzip measurement. It also prints the entropy of the cluster
assignment of the largest kernel (dense1), which is what decides the gzip size.

Then tfmot's collaborative chain on the same baseline: prune to 80% (its
PolynomialDecay, 5 epochs), sparsity-preserving clustering (16, k-means++, 5
epochs), PCQAT (5 epochs, int8). On this machine that chain, not clustering
alone, is what lands near the gzip figures of the table's "clustering 16" and
"cluster-preserving QAT (16)" rows.

`--save-baselines DIR` writes each seed's trained baseline to
``DIR/baseline_seed{seed}.npz``; `python benchmarks/clustering.py
--baseline-weights DIR` then fine-tunes kmot's clustering from the same weights.

tfmot needs the Keras 2 stack, which kmot does not depend on:

    pip install "tf_keras~=$(python -c 'import tensorflow as tf; print(tf.__version__)')" \\
        tensorflow-model-optimization dm-tree
    python benchmarks/tfmot_reference.py [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tfmot runs on tf_keras only
sys.path.insert(0, os.path.dirname(__file__))
from _common import BATCH, FINETUNE_EPOCHS, finetune_steps, litert_metrics  # noqa: E402

import numpy as np  # noqa: E402


def _entropy_bits(values: np.ndarray) -> float:
    counts = np.unique(values, return_counts=True)[1]
    p = counts / counts.sum()
    return round(float(-(p * np.log2(p)).sum()), 3)


def run_seed(seed: int, tf, tfk, tfmot, save_dir: str | None = None) -> None:
    from kmot.data import digits

    x_train, y_train, x_test, y_test = digits(seed=seed)
    L = tfk.layers

    def compiled(model):
        model.compile(tfk.optimizers.Adam(1e-3),
                      tfk.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
        return model

    def emit(variant, model, *, int8=False, **extra):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        line = {"benchmark": "tfmot_reference", "seed": seed, "variant": variant, **extra,
                **litert_metrics(converter.convert(), x_test, y_test)}
        print(json.dumps(line), flush=True)

    tf.keras.utils.set_random_seed(seed)
    base = compiled(tfk.Sequential([
        tfk.Input((8, 8, 1)), L.Conv2D(32, 3, padding="same", activation="relu"),
        L.Conv2D(32, 3, activation="relu"), L.Flatten(), L.Dense(64, activation="relu", name="dense1"),
        L.Dense(10)]))
    base.fit(x_train, y_train, batch_size=BATCH, epochs=15, verbose=0)
    emit("dense", base)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        np.savez(os.path.join(save_dir, f"baseline_seed{seed}.npz"), *base.get_weights())
    initial = base.get_weights()

    def fresh_baseline():
        # tfmot cannot wrap a model it has wrapped before ("StopIteration" in build).
        model = tfk.models.clone_model(base)
        model.set_weights(initial)
        return model

    clustered = compiled(tfmot.clustering.keras.cluster_weights(
        base, number_of_clusters=16,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS))
    clustered.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
    stripped = tfmot.clustering.keras.strip_clustering(clustered)
    emit("clustering_16_kmeans++", stripped,
         dense1_assignment_entropy_bits=_entropy_bits(stripped.get_layer("dense1").kernel.numpy()))

    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    cqat = compiled(tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme()))
    cqat.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
    emit("cqat_16_int8", cqat, int8=True)

    # The collaborative chain: prune -> sparsity-preserving clustering -> PCQAT.
    steps = finetune_steps(len(x_train))
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps),
                                                    frequency=max(1, steps // 20))
    tf.keras.utils.set_random_seed(seed)
    pruning = compiled(tfmot.sparsity.keras.prune_low_magnitude(fresh_baseline(),
                                                                pruning_schedule=schedule))
    pruning.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    pruned = tfmot.sparsity.keras.strip_pruning(pruning)
    emit("pruned_80", pruned)
    tf.keras.utils.set_random_seed(seed)
    both = compiled(tfmot.clustering.keras.cluster_weights(
        pruned, number_of_clusters=16, preserve_sparsity=True,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS))
    both.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
    both = tfmot.clustering.keras.strip_clustering(both)
    emit("pruned_80_clustered_16", both)
    tf.keras.utils.set_random_seed(seed)
    pcqat = compiled(tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(both),
        tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)))
    pcqat.fit(x_train, y_train, batch_size=BATCH, epochs=FINETUNE_EPOCHS, verbose=0)
    emit("pcqat_int8", pcqat, int8=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--save-baselines", metavar="DIR",
                        help="write each seed's baseline weights to DIR/baseline_seed{seed}.npz")
    args = parser.parse_args()
    try:
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras as tfk
    except ImportError as err:
        print(f"tfmot_reference needs tf_keras and tensorflow-model-optimization ({err}); "
              "install them as shown in this script's docstring.", file=sys.stderr)
        return 2
    for seed in args.seeds:
        run_seed(seed, tf, tfk, tfmot, args.save_baselines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
