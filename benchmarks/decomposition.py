"""Low-rank factorization: fewer parameters and MACs, and the LiteRT speed-up they buy.

Three models, each trained as its baseline (Adam 1e-3, batch 64), then factored by
`kmot.decomposition.factorize` and given 5 fine-tuning epochs (Adam 1e-3, batch
64) two ways from the same factored weights: alone (labels) and distilled from the
unfactored baseline (`kmot.distillation.distill`, T=4, alpha=0.5):

- ``mlp_3x512``: Dense 40 -> 512 -> 512 -> 512 -> 10 (ReLU) on MNIST-1D (20,000
  samples generated locally, 4,000 test), 20 epochs; factored at compression 2x
  and 4x (whole-model parameters).
- ``digits_cnn``: the task D digits CNN, 15 epochs; compression 2x with Tucker-2
  and with spatial SVD; since its Dense holds 88% of the parameters, a parameter
  budget factors that Dense alone, so also ``conv2 /2 MACs``: conv2 alone, at the
  largest rank that halves its MACs, per method.
- ``se_net_32``: the residual / concat / squeeze-excite net of
  ``benchmarks/structured.py`` on digits upscaled to 32x32x3, 15 epochs;
  compression 2x with Tucker-2 and with spatial SVD.

Reported per variant: parameters, MACs, the summary's ranks and kept energy;
Keras test accuracy before fine-tuning, then after it alone and distilled (mean,
std and each run of ``--finetune-seeds`` seeds, all from the same factored
weights; the drop in points is the mean's against the baseline); the p50 latency
speed-up vs the baseline in float and int8 LiteRT of the seed-0 fine-tuned model
(int8: post-training, calibrated on 200 training samples; its LiteRT accuracy
too), measured in one run: batch 1, 1 thread, the default XNNPACK delegate,
rounds alternating between the models; and factorize + QAT (that model,
`quantize_model`, 1 epoch at Adam 1e-4) against QAT alone (the baseline,
likewise): LiteRT int8 accuracy, bytes and gzip bytes. The baseline row also
gives its accuracy after 5 more epochs (the same budget and seeds).

Fine-tuning uses Adam 1e-3 constant, or with ``--schedule cosine`` a decay from
``--lr`` (default 5e-3) to 0 over the 5 epochs (the recipe that brings channel
pruning within a point, see ``benchmarks/structured.py``).

    python benchmarks/decomposition.py [--models mlp_3x512 digits_cnn se_net_32]
                                       [--rounds 15] [--seed 0] [--finetune-seeds 3]
                                       [--schedule constant|cosine] [--lr 5e-3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

from harness import alternating_p50s  # noqa: E402 - the shared timing protocol

import numpy as np

BATCH = 64
FINETUNE_EPOCHS = 5


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def _optimizer(lr, schedule: str = "constant", epochs: int = 0, samples: int = 0):
    """Adam at `lr`, or with ``cosine`` decayed from `lr` to 0 over `epochs` of `samples`."""
    import keras

    if schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, epochs * math.ceil(samples / BATCH))
    return keras.optimizers.Adam(lr)


def _compile(model, lr=1e-3, optimizer=None):
    import keras

    model.compile(optimizer or _optimizer(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _accuracy(model, x, y) -> float:
    return round(float((model.predict(x, verbose=0, batch_size=256).argmax(-1) == y).mean()), 4)


def _litert(content: bytes, x, y) -> dict:
    from kmot.export import LiteRTModel, inspect

    info = inspect(content)
    acc = float(np.mean(LiteRTModel(content).predict(x, batch_size=64).argmax(-1) == y))
    return {"accuracy": round(acc, 4), "bytes": info.size_bytes, "gzip_bytes": info.gzip_bytes,
            "fully_int8": info.is_quantized and not info.float_ops_between_io()}


def mlp():
    import keras

    L = keras.layers
    return keras.Sequential([keras.Input((40,), name="signal"),
                             *[L.Dense(512, activation="relu", name=f"dense{i}") for i in range(3)],
                             L.Dense(10, name="logits")], name="mlp_3x512")


def _mnist1d():
    from kmot.data import mnist1d

    x, y, x_test, y_test = mnist1d(num_samples=20000)
    return x[..., 0], y, x_test[..., 0], y_test


def _digits():
    from kmot.data import digits

    return digits()


def _digits_32():
    from kmot.data import digits

    return digits(image_size=32, channels=3)


def _digits_cnn():
    from kmot.data import digits_cnn

    return digits_cnn(compile=False)


def _se_net():
    from structured import se_net

    return se_net()


def _halving_rank(model, layer: str, method: str) -> int:
    """The largest rank at which `layer` alone, factored by `method`, has at most half its MACs."""
    from kmot.decomposition import DecompositionError, summary

    best = None
    for r in range(1, 1024):
        try:
            row = summary(model, rank={layer: r}, method=method).layer(layer)
        except DecompositionError:  # past the layer's largest rank
            break
        if row.factored and row.macs_after <= row.macs_before / 2:
            best = r
    if best is None:
        raise SystemExit(f"{layer}: no {method} rank halves its MACs")
    return best


def _variants(name: str, base) -> list[tuple[str, dict]]:
    if name == "mlp_3x512":
        return [("compression 2x", {"compression": 2.0}), ("compression 4x", {"compression": 4.0})]
    found = [(f"compression 2x {m}", {"compression": 2.0, "method": m}) for m in ("tucker", "spatial")]
    if name == "digits_cnn":
        found += [(f"conv2 /2 MACs {m}", {"rank": {"conv2": _halving_rank(base, "conv2", m)},
                                          "method": m}) for m in ("tucker", "spatial")]
    return found


MODELS = {
    # name: (model, data, baseline epochs)
    "mlp_3x512": (mlp, _mnist1d, 20),
    "digits_cnn": (_digits_cnn, _digits, 15),
    "se_net_32": (_se_net, _digits_32, 15),
}


# -- one model -------------------------------------------------------------------------


def _spread(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
            "runs": values}


def run(name: str, rounds: int, seed: int, seeds: int, schedule: str = "constant",
        lr: float = 1e-3) -> None:
    import keras

    from kmot import quantization
    from kmot.core.cost import macs
    from kmot.decomposition import factorize, summary
    from kmot.distillation import distill
    from kmot.export import to_litert

    make, data, epochs = MODELS[name]
    x, y, x_test, y_test = data()
    calibration = x[:200]
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    base = _compile(make())
    base.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0)
    base_acc = _accuracy(base, x_test, y_test)

    def qat(model) -> bytes:
        q = _compile(quantization.quantize_model(model), lr=1e-4)
        q.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
        return to_litert(q)

    def finetuned(make_model, s: int, distilled: bool):
        """A fresh model from `make_model`, trained 5 epochs with seed `s` (alone or distilled)."""
        model = make_model()
        keras.utils.set_random_seed(s)
        optimizer = _optimizer(lr, schedule, FINETUNE_EPOCHS, len(x))
        if distilled:
            return distill(model, base, x, y, epochs=FINETUNE_EPOCHS, batch_size=BATCH,
                           optimizer=optimizer)
        _compile(model, optimizer=optimizer).fit(x, y, epochs=FINETUNE_EPOCHS, batch_size=BATCH,
                                                 verbose=0)
        return model

    def copy_of_base():
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
        return model

    more = [_accuracy(finetuned(copy_of_base, s, False), x_test, y_test) for s in range(seeds)]
    contents = {"base/float": to_litert(base),
                "base/int8": to_litert(base, quantize="int8", representative_data=calibration)}
    base_qat = qat(base)
    rows = {}
    for label, options in _variants(name, base):
        def make_factored(options=options):  # deterministic: the same weights every time
            return factorize(base, **options)

        factored = make_factored()
        result = summary(factored)
        row = {"options": dict(options), "params": factored.count_params(), "macs": macs(factored),
               "compression": round(result.compression, 3), "mac_reduction": round(result.mac_reduction, 3),
               "layers": {r.layer: {"method": r.method, "ranks": list(r.ranks),
                                    "kept_energy": round(r.kept_energy, 4)}
                          for r in result.layers if r.factored},
               "accuracy_before_finetune": _accuracy(factored, x_test, y_test)}
        alone = [finetuned(make_factored, s, False) for s in range(seeds)]
        row["accuracy_finetuned"] = _spread([_accuracy(m, x_test, y_test) for m in alone])
        row["accuracy_distilled"] = _spread(
            [_accuracy(finetuned(make_factored, s, True), x_test, y_test) for s in range(seeds)])
        exported = alone[0]  # seed 0's fine-tuned model: speed, int8, QAT
        contents[f"{label}/float"] = to_litert(exported)
        contents[f"{label}/int8"] = to_litert(exported, quantize="int8", representative_data=calibration)
        row["int8_ptq"] = _litert(contents[f"{label}/int8"], x_test, y_test)
        row["qat"] = _litert(qat(exported), x_test, y_test)
        rows[label] = row
    p50 = alternating_p50s(contents, x_test, rounds)
    base_row = {"params": base.count_params(), "macs": macs(base), "accuracy": base_acc,
                "accuracy_after_5_more_epochs": _spread(more),
                "p50_ms_float": round(p50["base/float"], 4), "p50_ms_int8": round(p50["base/int8"], 4),
                "int8_ptq": _litert(contents["base/int8"], x_test, y_test),
                "qat": _litert(base_qat, x_test, y_test)}
    emit({"benchmark": "decomposition", "model": name, "variant": "unfactored", **base_row})
    for label, row in rows.items():
        speedups = {m: p50[f"base/{m}"] / p50[f"{label}/{m}"] for m in ("float", "int8")}
        drops = {k: round(100 * (base_acc - row[f"accuracy_{k}"]["mean"]), 2)
                 for k in ("finetuned", "distilled")}
        line = {"benchmark": "decomposition", "model": name, "variant": label, **row,
                "drop_pt_finetuned": drops["finetuned"], "drop_pt_distilled": drops["distilled"],
                "p50_ms_float": round(p50[f"{label}/float"], 4), "p50_ms_int8": round(p50[f"{label}/int8"], 4),
                "speedup_float": round(speedups["float"], 3), "speedup_int8": round(speedups["int8"], 3),
                "speedup_per_mac_reduction": {m: round(s / row["mac_reduction"], 3)
                                              for m, s in speedups.items()},
                "qat_vs_qat_alone": {
                    "accuracy_pt": round(100 * (row["qat"]["accuracy"] - base_row["qat"]["accuracy"]), 2),
                    "bytes_ratio": round(row["qat"]["bytes"] / base_row["qat"]["bytes"], 3),
                    "gzip_ratio": round(row["qat"]["gzip_bytes"] / base_row["qat"]["gzip_bytes"], 3)}}
        if name == "mlp_3x512" and "4x" in label:
            line["targets"] = {"speedup_float_1.5x": speedups["float"] >= 1.5,
                               "speedup_int8_1.5x": speedups["int8"] >= 1.5,
                               "finetuned_within_1pt": drops["finetuned"] <= 1.0,
                               "distilled_within_1pt": drops["distilled"] <= 1.0}
        emit(line)
    emit({"benchmark": "decomposition_time", "model": name,
          "seconds": round(time.perf_counter() - start, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0, help="the baselines' training seed")
    parser.add_argument("--finetune-seeds", type=int, default=3,
                        help="fine-tuning runs (seeds 0..n-1) per variant, alone and distilled")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="the fine-tuning rate: constant, or a cosine decay to 0 (the "
                             "baseline's 5 more epochs use it too)")
    parser.add_argument("--lr", type=float, default=None,
                        help="the fine-tuning (peak) rate; default 1e-3 constant, 5e-3 cosine")
    args = parser.parse_args()
    lr = args.lr or (5e-3 if args.schedule == "cosine" else 1e-3)
    emit({"benchmark": "decomposition_setup", "cpu_count": os.cpu_count(), "rounds": args.rounds,
          "seed": args.seed, "finetune_seeds": args.finetune_seeds, "threads": 1,
          "finetune": f"Adam {lr:g} {args.schedule}, {FINETUNE_EPOCHS} epochs, batch {BATCH}"})
    for name in args.models:
        run(name, args.rounds, args.seed, args.finetune_seeds, args.schedule, lr)


if __name__ == "__main__":
    main()
