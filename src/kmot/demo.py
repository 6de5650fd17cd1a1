"""The built-in demo: every kmot technique on the digits task, end to end.

`ptq_rows` (every post-training mode) is shared with `benchmarks/ptq.py`;
`run_demo` is what `kmot demo` runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["train_digits_baseline", "ptq_rows", "run_demo", "PTQ_MODES"]

PTQ_MODES = ("float32", "float16", "dynamic", "int8")


def train_digits_baseline(*, epochs: int = 15, seed: int = 0, verbose: int = 0,
                          callbacks: list | None = None):
    """Trains the benchmark's digits CNN (Adam 1e-3, batch 64).

    Returns:
        ``(model, (x_train, y_train, x_test, y_test))``.
    """
    import keras

    from kmot.data import digits, digits_cnn

    keras.utils.set_random_seed(seed)
    data = digits(seed=seed)
    model = digits_cnn()
    model.fit(data[0], data[1], batch_size=64, epochs=epochs, verbose=verbose,
              callbacks=callbacks)
    return model, data


def epoch_progress(say: Callable[[str], None], stage: str, epochs: int):
    """A Keras callback saying ``"<stage>: epoch i/n"`` as each epoch starts."""
    import keras

    class _Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            say(f"{stage}: epoch {epoch + 1}/{epochs}")

    return _Progress()


def ptq_rows(
    model: Any,
    x_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    modes: tuple[str, ...] = PTQ_MODES,
    out_dir: str | os.PathLike | None = None,
    latency_runs: int = 200,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Exports `model` in each mode and measures it in the LiteRT interpreter.

    Returns:
        One dict per mode: mode, accuracy, bytes, gzip_bytes, p50_ms (single
        image, one thread), and float_ops (float compute ops left in the file).
    """
    from kmot.export import LiteRTModel, inspect, to_litert

    rows = []
    for mode in modes:
        if progress:
            progress(mode)
        path = Path(out_dir) / f"digits_{mode}.tflite" if out_dir else None
        content = to_litert(
            model,
            path,
            quantize=None if mode == "float32" else mode,
            representative_data=x_train,
        )
        runner = LiteRTModel(content, num_threads=1)
        logits = runner.predict(x_test, batch_size=64)
        info = inspect(content)
        times = runner.time_invoke(x_test[:1], runs=latency_runs, warmup=20)
        rows.append(
            {
                "mode": mode,
                "accuracy": float(np.mean(np.argmax(logits, -1) == y_test)),
                "bytes": info.size_bytes,
                "gzip_bytes": info.gzip_bytes,
                "p50_ms": float(np.percentile(times, 50)),
                "float_ops": len(info.float_ops) if info.is_quantized else None,
            }
        )
    return rows


def run_demo(out_dir: str | os.PathLike, *, epochs: int = 15, finetune_epochs: int = 5,
             seed: int = 0, progress: Callable[[str], None] | None = None,
             registry_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The full demo: every technique on digits, one report, a gate, the registry.

    Returns:
        ``{"report": Report, "gate": GateResult, "registered": ModelVersion | None,
        "files": {name: path}}``.

    Raises:
        KmotError: ``epochs`` or ``finetune_epochs`` below 1, or ``out_dir`` a file
            (checked before any training).
    """
    from kmot.errors import KmotError

    for option, value in (("epochs", epochs), ("finetune_epochs", finetune_epochs)):
        if not isinstance(value, int) or value < 1:
            raise KmotError(f"Expected {option} to be an int of at least 1 (every technique "
                            f"trains). Received: {option}={value!r}")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise KmotError(f"Expected out_dir to be a folder (created if missing). Received: "
                        f"out_dir={str(out_dir)!r}, which is a file. Choose a folder path.")
    import keras

    from kmot import clustering, distillation, evaluate, quantization, sparsity
    from kmot._hashing import model_sha256
    from kmot.data import digits_cnn
    from kmot.export import to_litert
    from kmot.registry import Registry

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda message: None)
    base, (x_train, y_train, x_test, y_test) = train_digits_baseline(
        epochs=epochs, seed=seed, callbacks=[epoch_progress(say, "training the baseline", epochs)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    stage = {"name": ""}

    def finetune(model, n=finetune_epochs):
        keras.utils.set_random_seed(seed)
        model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
        model.fit(x_train, y_train, batch_size=64, epochs=n, verbose=0,
                  callbacks=[epoch_progress(say, stage["name"], n)])
        return model

    def begin(name):
        stage["name"] = name
        say(name)

    files: dict[str, Path] = {}
    made: dict[str, dict[str, Any]] = {}
    origin = {"source": "baseline", "source_sha256": model_sha256(base)}
    tune = {"technique": "fine-tune", "options": {"epochs": finetune_epochs,
                                                  "optimizer": "Adam(1e-3)", "batch_size": 64}}

    def export(name, model, steps, **kwargs):
        files[name] = out / f"{name}.tflite"
        to_litert(model, files[name], representative_data=x_train, **kwargs)
        made[name] = {**origin, "steps": steps, "export": kwargs.get("quantize", "float32")}

    export("baseline", base, [])
    made["baseline"] = {"export": "float32", "steps": [{"technique": "train", "options": {
        "model": "kmot.data.digits_cnn()", "epochs": epochs, "optimizer": "Adam(1e-3)",
        "batch_size": 64, "seed": seed}}]}
    export("ptq_int8", base, [], quantize="int8")
    begin("pruning 80% (global allocation)")
    steps = finetune_epochs * int(np.ceil(len(x_train) / 64))
    schedule = sparsity.PolynomialDecay(0.0, 0.8, 0, int(0.7 * steps), frequency=max(1, steps // 20))
    pruned = sparsity.strip_pruning(finetune(sparsity.prune_low_magnitude(
        base, pruning_schedule=schedule, sparsity_allocation="global")))
    prune_steps = [{"technique": "prune_low_magnitude", "options": {
        "final_sparsity": 0.8, "schedule": "PolynomialDecay over 70% of the steps",
        "sparsity_allocation": "global"}}, tune, {"technique": "strip_pruning"}]
    export("pruned_80", pruned, prune_steps)
    begin("pruning 50% of the channels")  # beside pruned_80: zeros vs removed channels
    export("channels_50", finetune(sparsity.prune_channels(base, sparsity=0.5)),
           [{"technique": "prune_channels", "options": {"sparsity": 0.5, "importance": "l2"}},
            tune])
    begin("clustering (16 clusters)")
    export("clustered_16", clustering.strip_clustering(finetune(clustering.cluster_weights(
        base, number_of_clusters=16))), [{"technique": "cluster_weights", "options": {
            "number_of_clusters": 16}}, tune, {"technique": "strip_clustering"}])
    begin("quantization-aware training")
    qat = [{"technique": "quantize_model"}, tune]
    export("qat_int8", finetune(quantization.quantize_model(base)), qat, quantize="int8")
    begin("pruning-preserving QAT")
    export("pqat_int8", finetune(quantization.quantize_model(pruned, preserve_sparsity=True)),
           [*prune_steps, {"technique": "quantize_model", "options": {"preserve_sparsity": True}},
            tune], quantize="int8")
    say("distilling a half-size student")
    keras.utils.set_random_seed(seed)
    student = digits_cnn(filters=(16, 32), units=32, compile=False, name="digits_student")
    student.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    student = distillation.distill(student, base, x_train, y_train, epochs=epochs, batch_size=64,
                                   callbacks=[epoch_progress(say, "distilling a half-size student",
                                                             epochs)])
    export("student_int8", student, [{"technique": "distill", "options": {
        "student": "digits_cnn(filters=(16, 32), units=32)", "teacher": "baseline",
        "epochs": epochs}}], quantize="int8")

    say("evaluating every file on the same data")
    report = evaluate.compare({name: path for name, path in files.items()}, data=(x_test, y_test),
                              baseline="baseline", runs=100, warmup=10, provenance=made)
    budgets = {"max_accuracy_drop": 0.01, "max_gzip_bytes": 40_000}
    verdict = evaluate.gate(report, budgets, candidate="pqat_int8")
    report = report.with_gate(verdict)
    report.save(out / "report")
    registered = None
    if verdict.passed:
        registry = Registry(registry_root if registry_root is not None else out / "registry")
        registered = registry.push(files["pqat_int8"], name="digits",
                                   report=out / "report" / "report.json")
        registered = registry.promote("digits", registered.version)
        report = report.with_registration(registered, candidate="pqat_int8",
                                          registry=registry.root)
        report.save(out / "report")
    return {"report": report, "gate": verdict, "registered": registered, "files": files,
            "budgets": budgets}
