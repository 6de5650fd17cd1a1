"""Running a recipe: fine-tuning steps, export, evaluation, gate, registry.

Every finished step leaves its model in ``out/steps/NN_kind.keras`` and then a
record ``NN_kind.json`` holding its key (a hash of its input model, its own
options, the training settings and the seed) and the model file's sha256;
running the recipe again reuses each step whose record matches both, so a
change to step 3 re-runs steps 3 and after only. Every file is written whole
or not at all (`kmot._files`), the record last: a run killed at any point
leaves steps that are either complete or re-run on the next start.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kmot.recipes.schema import Recipe, RecipeError, load_recipe

__all__ = ["optimize", "PipelineResult"]


@dataclass
class PipelineResult:
    """What a recipe run produced."""

    model: Any
    tflite: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    report: Any = None
    gate: Any = None
    registered: Any = None

    @property
    def passed(self) -> bool:
        return self.gate is None or bool(self.gate.passed)


def _xy(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    from kmot._npz import check_finite, read_npz

    if isinstance(data, (str, os.PathLike)):
        arrays = read_npz(data, error=RecipeError, what=f"{what} file",
                          holding=" with arrays x and y", example="np.savez(path, x=x, y=y)")
        if not {"x", "y"} <= set(arrays):
            raise RecipeError(
                f"The {what} file must hold arrays named 'x' and 'y'. Received: {sorted(arrays)}")
        x, y, source = arrays["x"], arrays["y"], os.fspath(data)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y, source = np.asarray(data[0]), np.asarray(data[1]), f"the {what} arrays"
    else:
        raise RecipeError(f"Expected {what} as (x, y) or an .npz path. Received: {type(data).__name__}")
    check_finite({"x": x, "y": y}, error=RecipeError, what=what.capitalize(), source=source)
    return x, y


def _check_fits(model, x: np.ndarray, y: np.ndarray, what: str) -> None:
    """The data fits the model's input and has one label per sample, before any work."""
    from kmot.export.calibration import input_specs

    specs = input_specs(model)
    described = ", ".join(s.describe() for s in specs)
    if len(specs) != 1 or x.ndim != len(specs[0].shape) or any(
            want is not None and want != got for want, got in zip(specs[0].shape[1:], x.shape[1:])):
        raise RecipeError(
            f"The {what} does not fit the model's input(s) {described}. Expected x of shape "
            f"(num_samples, {', '.join('None' if d is None else str(d) for d in specs[0].shape[1:])})"
            f" for a one-input model. Received: x of shape {x.shape}")
    if y.ndim == 0 or len(y) != len(x):
        raise RecipeError(f"The {what} needs one label per sample. Expected y with {len(x)} "
                          f"rows. Received: y of shape {y.shape}")


def _check_target(model, recipe: Recipe) -> None:
    """Stops before fine-tuning when the export step's target cannot run the model."""
    from kmot.export.check import compatibility_problems

    qat = any(step.kind == "quantize" for step in recipe.steps)  # exports int8 by itself
    mode = recipe.export.quantize or ("int8" if qat else None)
    target = {"int8": "litert-int8", "int16x8": "litert-int16x8"}.get(mode, "litert")
    if problem := compatibility_problems(model, target, keep_float=tuple(recipe.export.keep_float)):
        raise RecipeError(f"{problem} Received: export quantize={mode!r}, checked as {target}")


def _provenance(recipe: Recipe, source: Any, baseline: Any) -> dict[str, dict[str, Any]]:
    """How the baseline and the recipe's model were made, for the report."""
    from kmot._hashing import model_sha256

    origin = {"source": os.fspath(source) if isinstance(source, (str, os.PathLike))
              else getattr(baseline, "name", None),
              "source_sha256": model_sha256(source if isinstance(source, (str, os.PathLike))
                                            else baseline)}
    steps = [{"technique": step.kind,
              "options": {**step.model_dump(mode="json", exclude={"kind"}),
                          "epochs": step.epochs or recipe.training.epochs}}
             for step in recipe.steps]
    qat = any(step.kind == "quantize" for step in recipe.steps)  # exports int8 by itself
    made = {**origin, "steps": steps,
            "export": recipe.export.quantize or ("int8" if qat else "float32"),
            "recipe": recipe.name,
            "recipe_sha256": hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()}
    return {"baseline": {**origin, "export": "float32"}, recipe.name: made}


def _compile(model, recipe: Recipe, steps: int):
    """Adam at the recipe's rate, decayed to 0 over `steps` with ``schedule: cosine``."""
    import keras

    rate = recipe.training.learning_rate
    if recipe.training.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, steps))
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=recipe.training.from_logits),
        metrics=["accuracy"],
    )
    return model


class _EpochProgress:
    """A Keras callback advancing a rich progress task by one per epoch."""

    def __new__(cls, advance: Callable[[], None]):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                advance()

        return Callback()


def _run_step(step, model, baseline, recipe: Recipe, x, y, advance, callbacks=()):
    from kmot import clustering, quantization, sparsity

    epochs = step.epochs or recipe.training.epochs
    batch = recipe.training.batch_size
    fit = dict(batch_size=batch, epochs=epochs, verbose=0,
               callbacks=[_EpochProgress(advance), *callbacks])
    total = epochs * int(np.ceil(len(x) / batch))  # training steps of this step
    if step.kind == "prune":
        steps = epochs * int(np.ceil(len(x) / batch))
        schedule = sparsity.PolynomialDecay(
            step.initial_sparsity, step.final_sparsity, begin_step=0,
            end_step=max(1, int(step.end_fraction * steps)), frequency=max(1, steps // step.updates))
        wrapped = sparsity.prune_low_magnitude(
            model, pruning_schedule=schedule, sparsity_allocation=step.allocation,
            sparsity_m_by_n=step.sparsity_m_by_n)
        _compile(wrapped, recipe, total).fit(x, y, **fit)
        return sparsity.strip_pruning(wrapped)
    if step.kind == "prune_channels":
        return _prune_channels(step, model, recipe, x, y, fit)
    if step.kind == "factorize":
        from kmot import decomposition

        factored = decomposition.factorize(model, rank=step.rank, energy=step.energy,
                                           compression=step.compression, method=step.method)
        _compile(factored, recipe, total).fit(x, y, **fit)
        return factored
    if step.kind == "cluster":
        wrapped = clustering.cluster_weights(
            model, number_of_clusters=step.number_of_clusters, cluster_centroids_init=step.init,
            preserve_sparsity=step.preserve_sparsity, cluster_per_channel=step.per_channel)
        _compile(wrapped, recipe, total).fit(x, y, **fit)
        return clustering.strip_clustering(wrapped)
    if step.kind == "quantize":
        qat = quantization.quantize_model(
            model, scheme=step.scheme, preserve_sparsity=step.preserve_sparsity,
            preserve_clusters=step.preserve_clusters)
        _compile(qat, recipe, total).fit(x, y, **fit)
        return qat
    from kmot import distillation  # step.kind == "distill"

    teacher = baseline if step.teacher == "baseline" else _load(step.teacher)
    _compile(model, recipe, total)
    return distillation.distill(model, teacher, x, y, epochs=epochs, batch_size=batch,
                                temperature=step.temperature, alpha=step.alpha,
                                callbacks=fit["callbacks"])


def _prune_channels(step, model, recipe: Recipe, x, y, fit):
    """Channels removed (one-shot, or masks ramped in training, then removed), fine-tuned."""
    from kmot import sparsity

    if step.gradual:
        steps = fit["epochs"] * int(np.ceil(len(x) / fit["batch_size"]))
        schedule = sparsity.PolynomialDecay(
            0.0, step.sparsity, begin_step=0, end_step=max(1, int(step.end_fraction * steps)),
            frequency=max(1, steps // step.updates))
        masked = sparsity.mask_channels(model, pruning_schedule=schedule,
                                        importance=step.importance, round_to=step.round_to,
                                        allocation=step.allocation)
        _compile(masked, recipe, steps).fit(
            x, y, **{**fit, "callbacks": [*fit["callbacks"], sparsity.UpdatePruningStep()]})
        return sparsity.remove_masked_channels(masked)
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=recipe.training.from_logits)
    slim = sparsity.prune_channels(
        model, sparsity=step.sparsity, importance=step.importance, round_to=step.round_to,
        allocation=step.allocation, loss=loss,
        data=(x, y) if step.importance == "taylor" else None)
    _compile(slim, recipe, fit["epochs"] * int(np.ceil(len(x) / fit["batch_size"]))).fit(
        x, y, **fit)
    return slim


def _load(path):
    from kmot.export import load_model

    return load_model(path)


def _reusable(path: Path, record: Path, key: str) -> Any | None:
    """The model a previous run saved for this step, or None to run the step again.

    None when the record or the model is missing, unreadable, or from another
    key or file (a run killed between saving the model and writing its record).
    """
    from kmot._files import sha256_file

    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        if (not isinstance(saved, dict) or saved.get("key") != key
                or saved.get("sha256") != sha256_file(path)):
            return None
        return _load(path)
    except Exception:  # noqa: BLE001 - whatever a damaged file raises, re-running fixes it
        return None


def _save_step(model: Any, path: Path, record: Path, key: str, step: Any) -> None:
    from kmot._files import atomic_path, sha256_file, write_atomic

    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    write_atomic(record, json.dumps({"key": key, "sha256": sha256_file(path),
                                     "step": step.model_dump()}, indent=2))


# The temporary names kmot._files writes through: ".<name>.<16 hex>.part[.keras]".
_PARTIAL = re.compile(r"\..+\.[0-9a-f]{16}\.part(\.keras)?")


def _remove_partial(out: Path) -> None:
    """Removes the temporary files a killed run left in its output folders."""
    for folder in (out, out / "steps", out / "report"):
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if _PARTIAL.fullmatch(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)


def optimize(
    model: Any,
    recipe: Any,
    *,
    train_data: Any,
    val_data: Any,
    out_dir: str | os.PathLike,
    registry_root: str | os.PathLike | None = None,
    progress: bool | None = None,
    callbacks: Any = (),
) -> PipelineResult:
    """Runs a recipe on a baseline model: steps, export, evaluate, gate, register.

    Args:
        model: the baseline: a Keras model or a ``.keras`` path.
        recipe: a recipe YAML path or dict (see `kmot.recipes.schema`).
        train_data: (x, y) or an ``.npz`` with arrays ``x`` and ``y``, for fine-tuning
            and calibration.
        val_data: the same, for evaluation.
        out_dir: where steps, ``model.tflite``, ``baseline.tflite`` and the report go.
        registry_root: the registry folder for ``register`` (default: kmot's).
        progress: show progress bars (default: when the terminal is interactive).
        callbacks: Keras callbacks added to every step's fine-tuning (one instance
            across the steps; it may stop a run by raising).

    Returns:
        A `PipelineResult`; ``result.passed`` is the gate's verdict.

    Raises:
        RecipeError: an invalid recipe or data file.

    Example:
        >>> result = optimize("base.keras", "recipe.yaml", train_data="train.npz",
        ...                   val_data="val.npz", out_dir="out/")  # doctest: +SKIP
    """
    import keras
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kmot._hashing import model_sha256
    from kmot.export import load_model, to_litert

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    baseline = load_model(model)
    x, y = _xy(train_data, "training data")
    x_val, y_val = _xy(val_data, "validation data")
    _check_fits(baseline, x, y, "training data")
    _check_fits(baseline, x_val, y_val, "validation data")
    _check_target(baseline, recipe)
    out = Path(out_dir)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    _remove_partial(out)  # one run per output folder: a leftover is from a killed one
    training = recipe.training.model_dump_json() + f"seed={recipe.seed}"
    key = model_sha256(baseline)
    current, records = baseline, []
    total = sum((s.epochs or recipe.training.epochs) for s in recipe.steps)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=progress is False, transient=True) as bar:
        task = bar.add_task(f"{recipe.name}: fine-tuning", total=max(total, 1))
        for i, step in enumerate(recipe.steps):
            key = hashlib.sha256((key + step.model_dump_json() + training).encode()).hexdigest()
            path = out / "steps" / f"{i:02d}_{step.kind}.keras"
            record = out / "steps" / f"{i:02d}_{step.kind}.json"
            epochs = step.epochs or recipe.training.epochs
            reused = _reusable(path, record, key)
            if reused is not None:
                current = reused
                bar.advance(task, epochs)
                records.append({"step": step.kind, "path": str(path), "reused": True})
                continue
            bar.update(task, description=f"{recipe.name}: {step.kind} ({i + 1}/{len(recipe.steps)})")
            keras.utils.set_random_seed(recipe.seed + i)
            current = _run_step(step, current, baseline, recipe, x, y, lambda: bar.advance(task),
                                callbacks)
            _save_step(current, path, record, key, step)
            records.append({"step": step.kind, "path": str(path), "reused": False})

    export = recipe.export.quantize
    tflite = out / "model.tflite"
    to_litert(current, tflite, quantize=None if export in (None, "float32") else export,
              representative_data=x, num_calibration_samples=recipe.export.calibration_samples,
              keep_float=recipe.export.keep_float)
    to_litert(baseline, out / "baseline.tflite")
    result = PipelineResult(model=current, tflite=tflite, steps=records)
    if recipe.evaluate is not None:
        from kmot import evaluate

        result.report = evaluate.compare(
            {"baseline": out / "baseline.tflite", recipe.name: tflite}, data=(x_val, y_val),
            baseline="baseline", runs=recipe.evaluate.runs, warmup=recipe.evaluate.warmup,
            memory=recipe.evaluate.memory, progress=progress,
            provenance=_provenance(recipe, model, baseline))
        if recipe.gate:
            result.gate = evaluate.gate(result.report, recipe.gate)
            result.report = result.report.with_gate(result.gate)
        result.report.save(out / "report")
    if recipe.registry is not None and result.passed:
        from kmot.registry import Registry

        registry = Registry(registry_root)
        report_path = out / "report" / "report.json"
        result.registered = registry.push(
            tflite, name=recipe.registry.name,
            report=report_path if report_path.is_file() else None)
        if recipe.registry.promote:
            result.registered = registry.promote(recipe.registry.name,
                                                 result.registered.version)
        if result.report is not None:
            result.report = result.report.with_registration(
                result.registered, candidate=recipe.name, registry=registry.root)
            result.report.save(out / "report")
    return result
