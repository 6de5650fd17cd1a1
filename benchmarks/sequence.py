"""Sequence models and transformers through LiteRT: float, dynamic, int8 PTQ, QAT int8,
and 50% pruning + 16 clusters, on locally generated data (JSON lines).

Models: LSTM, GRU and Bidirectional LSTM on MNIST-1D as a 40-step sequence (the LSTMs
also as LiteRT's fused UNIDIRECTIONAL_SEQUENCE_LSTM op, float and int8: fused_float,
fused_int8, batch 1); a 2-block
transformer encoder (token and position embeddings, MultiHeadAttention, LayerNorm,
GELU) on sorting sequences of 8 digits (per-token accuracy: each output position
must compare every token with the others).

Each line: model, variant, LiteRT accuracy, agreement of the file's argmax with the
Keras model it came from (float for float/dynamic/int8, the QAT model for qat_int8,
the stripped pruned+clustered model for its int8 PTQ export), bytes, gzip bytes, p50 ms
(batch 1, 1 thread, rounds alternating between the model's files), and the float ops
left between the int8 file's QUANTIZE and DEQUANTIZE (op name -> count); warnings
kmot gave. Run: TF_CPP_MIN_LOG_LEVEL=3 python benchmarks/sequence.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import Counter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def compiled(model, rate=3e-3):
    import keras

    model.compile(keras.optimizers.Adam(rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def recurrent(kind: str, units: int):
    import keras

    i = keras.Input((40, 1))
    if kind == "lstm":
        x = keras.layers.LSTM(units)(i)
    elif kind == "gru":
        x = keras.layers.GRU(units)(i)
    else:
        x = keras.layers.Bidirectional(keras.layers.LSTM(units // 2))(i)
    return keras.Model(i, keras.layers.Dense(10)(x), name=kind)


def encoder(length=8, vocab=10, dim=32):
    import keras

    tokens = keras.Input((length,), dtype="int32", name="tokens")
    positions = keras.Input((length,), dtype="int32", name="positions")
    x = keras.layers.Embedding(vocab, dim)(tokens) + keras.layers.Embedding(length, dim)(positions)
    for _ in range(2):
        a = keras.layers.MultiHeadAttention(4, dim // 4)(x, x)
        x = keras.layers.LayerNormalization()(x + a)
        f = keras.layers.Dense(dim, activation="gelu")(keras.layers.Dense(2 * dim)(x))
        x = keras.layers.LayerNormalization()(x + f)
    return keras.Model([tokens, positions], keras.layers.Dense(vocab)(x), name="transformer")


def sort_task(n, seed, length=8, vocab=10):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (n, length)).astype("int32")
    positions = np.tile(np.arange(length, dtype="int32"), (n, 1))
    return [tokens, positions], np.sort(tokens, axis=1)


def p50s(contents: dict[str, bytes], rounds: int, runs: int) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for name, content in contents.items():
        it = Interpreter(model_content=content, num_threads=1)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        for _ in range(5):
            it.invoke()
        interpreters[name] = it
    times = {name: [] for name in contents}
    for _ in range(rounds):
        for name, it in interpreters.items():
            for _ in range(runs):
                start = time.perf_counter()
                it.invoke()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: round(float(np.percentile(t, 50)), 4) for name, t in times.items()}


def predict_keras(model, x):
    return model.predict(x, batch_size=256, verbose=0)


def sparsity_and_clusters(model) -> dict:
    kernels = [np.asarray(v.numpy()) for layer in model.layers for v in layer.weights
               if "kernel" in v.path or "embeddings" in v.path]
    return {"kernel_sparsity": round(float(np.mean(np.concatenate(
                [k.ravel() == 0 for k in kernels]))), 4),
            "max_unique_per_kernel": int(max(np.unique(k).size for k in kernels))}


def run_model(name, model, x, y, xt, yt, args):
    import keras

    import kmot
    from kmot.export import LiteRTModel, inspect, to_litert

    started = time.time()
    epochs = args.transformer_epochs if name == "transformer" else args.epochs
    compiled(model).fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    reference = predict_keras(model, xt).argmax(-1)
    float_accuracy = float(np.mean(reference == yt))
    calibration = [a[:200] for a in x] if isinstance(x, list) else x[:200]
    files, refs, notes = {}, {}, {}
    files["float"] = to_litert(model)
    files["dynamic"] = to_litert(model, quantize="dynamic")
    files["int8"] = to_litert(model, quantize="int8", representative_data=calibration)
    if name in ("lstm", "bilstm"):  # LiteRT's fused LSTM op (batch 1) beside the unrolled
        files["fused_float"] = to_litert(model, fused_lstm=True)
        files["fused_int8"] = to_litert(model, quantize="int8", representative_data=calibration,
                                        fused_lstm=True)
    for variant in ("float", "dynamic", "int8", "fused_float", "fused_int8"):
        refs[variant] = reference

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = compiled(kmot.quantization.quantize_model(model), rate=5e-4)
    notes["qat_int8"] = [str(w.message)[:300] for w in caught]
    qat.fit(x, y, epochs=args.qat_epochs, batch_size=64, verbose=0)
    refs["qat_int8"] = predict_keras(qat, xt).argmax(-1)
    files["qat_int8"] = to_litert(qat, allow_float_fallback=True)

    steps = int(np.ceil(len(y) / 64))
    ramp = max(1, steps * (args.prune_epochs - 1))
    pruned = compiled(kmot.sparsity.prune_low_magnitude(
        model, pruning_schedule=kmot.sparsity.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=ramp,
            frequency=max(1, ramp // 10))), rate=1e-3)
    pruned.fit(x, y, epochs=args.prune_epochs, batch_size=64, verbose=0,
               callbacks=[kmot.sparsity.UpdatePruningStep()])
    clustered = compiled(kmot.clustering.cluster_weights(
        kmot.sparsity.strip_pruning(pruned), number_of_clusters=16, preserve_sparsity=True),
        rate=5e-4)
    clustered.fit(x, y, epochs=args.cluster_epochs, batch_size=64, verbose=0)
    final = kmot.clustering.strip_clustering(clustered)
    final_pred = predict_keras(final, xt).argmax(-1)
    files["pruned_clustered_int8"] = to_litert(final, quantize="int8",
                                               representative_data=calibration)
    refs["pruned_clustered_int8"] = final_pred
    weights = sparsity_and_clusters(final)

    latency = p50s(files, args.rounds, args.runs)
    for variant, content in files.items():
        info = inspect(content)
        predicted = LiteRTModel(content).predict(xt, batch_size=64).argmax(-1)
        line = {
            "model": name, "variant": variant,
            "accuracy": round(float(np.mean(predicted == yt)), 4),
            "keras_accuracy": round(float(np.mean(refs[variant] == yt)), 4),
            "agreement": round(float(np.mean(predicted == refs[variant])), 4),
            "bytes": info.size_bytes, "gzip_bytes": info.gzip_bytes,
            "p50_ms": latency[variant],
            "flex_ops": sorted({op.name for op in info.ops
                                if op.name.startswith("Flex") or op.name == "CUSTOM"}),
        }
        if "int8" in variant or variant == "dynamic":
            line["float_ops"] = dict(Counter(op.name for op in info.float_ops_between_io()))
        if variant.startswith("pruned"):
            line.update(weights)
        if notes.get(variant):
            line["warnings"] = notes[variant]
        if variant != "float":
            line["accuracy_drop_vs_float"] = round(float_accuracy - line["accuracy"], 4)
        emit(line)
    emit({"model": name, "seconds": round(time.time() - started, 1)})
    keras.backend.clear_session()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lstm,gru,bilstm,transformer")
    parser.add_argument("--samples", type=int, default=2000, help="MNIST-1D samples")
    parser.add_argument("--epochs", type=int, default=8, help="recurrent models")
    parser.add_argument("--transformer-epochs", type=int, default=6)
    parser.add_argument("--qat-epochs", type=int, default=4)
    parser.add_argument("--prune-epochs", type=int, default=2)
    parser.add_argument("--cluster-epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    import keras

    from kmot.data import mnist1d

    x, y, xt, yt = mnist1d(num_samples=args.samples)
    emit({"data": "mnist1d", "train": len(y), "test": len(yt), "steps": 40,
          "keras": keras.__version__, "backend": keras.backend.backend()})
    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        if name == "transformer":
            tx, ty = sort_task(4096, 0)
            vx, vy = sort_task(1024, 1)
            run_model(name, encoder(), tx, ty, vx, vy, args)
        else:
            run_model(name, recurrent(name, 32), x, y, xt, yt, args)


if __name__ == "__main__":
    main()
