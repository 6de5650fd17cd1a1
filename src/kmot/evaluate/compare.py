"""`compare`: run every candidate on the same data and hardware, measure, report."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kmot._quiet import captured_output
from kmot._tempdirs import temporary_directory
from kmot.errors import EvaluationError
from kmot.evaluate.data import load_data
from kmot.evaluate.latency import summarize
from kmot.evaluate.memory import measure_peak_memory, peak_rss_mb
from kmot.evaluate.metrics import MetricLike, fidelity, resolve_metrics
from kmot.evaluate.profile import error_profile
from kmot.evaluate.report import Report
from kmot.evaluate.runners import candidate_name, make_runner
from kmot.evaluate.schema import (
    CandidateResult,
    MetricInfo,
    Provenance,
    Settings,
    error_location,
)

__all__ = ["compare"]


def _named(candidates: Any) -> dict[str, Any]:
    if isinstance(candidates, Mapping):
        named = {str(k): v for k, v in candidates.items()}
    elif isinstance(candidates, Sequence) and not isinstance(candidates, (str, bytes)):
        names = _file_names_where_stems_clash(
            [candidate_name(m, i) for i, m in enumerate(candidates)], candidates)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise EvaluationError(
                f"Expected distinct candidate names. Received: {twice} more than once "
                f"(names come from file stems or model names). Pass a dict "
                f"{{name: model}} to name them."
            )
        named = dict(zip(names, candidates))
    else:
        named = {candidate_name(candidates, 0): candidates}
    if not named:
        raise EvaluationError(
            "Expected at least one candidate (a .tflite/.keras path, flatbuffer bytes or "
            "a keras.Model). Received: none"
        )
    return named


def _file_names_where_stems_clash(names: list[str], candidates: Sequence[Any]) -> list[str]:
    """One model in several formats shares a stem (m.tflite, m.onnx): those are named
    by file name, when that tells them apart."""
    out = list(names)
    for name in {n for n in names if names.count(n) > 1}:
        group = [i for i, n in enumerate(names) if n == name]
        if all(isinstance(candidates[i], (str, os.PathLike)) for i in group):
            full = [Path(candidates[i]).name for i in group]
            if len(set(full)) == len(full):
                for i, file_name in zip(group, full):
                    out[i] = file_name
    return out


def _check_options(**options: int) -> None:
    for key, value in options.items():
        least = 0 if key == "warmup" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise EvaluationError(
                f"Expected {key} to be an int >= {least}. Received: {key}={value!r}"
            )


def _environment() -> dict[str, str]:
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "cpu_count": str(os.cpu_count())}
    for dist in ("numpy", "ai-edge-litert", "keras", "tensorflow", "tensorflow-cpu",
                 "onnxruntime", "onnx", "tf2onnx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[dist] = metadata.version(dist)
    return env


@contextlib.contextmanager
def _progress(show: bool | None, total: int) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    enabled = console.is_terminal if show is None else show
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not enabled) as bar:
        task = bar.add_task("evaluating", total=total)

        def step(description: str, advance: int = 0) -> None:
            bar.update(task, description=description, advance=advance)

        yield step


def compare(
    candidates: Mapping[str, Any] | Sequence[Any],
    data: Any,
    *,
    baseline: str | None = None,
    metrics: Sequence[MetricLike] | Mapping[str, MetricLike] = ("accuracy",),
    runs: int = 100,
    warmup: int = 10,
    threads: int = 1,
    batch_size: int = 1,
    memory: bool = True,
    predict_batch_size: int = 64,
    progress: bool | None = None,
    provenance: Mapping[str, Any] | None = None,
    remote: Any = None,
) -> Report:
    """Runs every candidate on the same validation data and measures it.

    Per candidate: task metrics and their delta vs the baseline; fidelity to the
    baseline's outputs (argmax agreement, RMSE, KL); latency percentiles of one
    invocation on the first `batch_size` samples; peak memory of an isolated
    process net of an idle one; size (raw, gzip); op coverage of LiteRT and
    ONNX files.

    Args:
        candidates: ``{name: model}`` or a list (named by file stem / model name).
            A model is a ``.tflite`` path or flatbuffer bytes (run with the LiteRT
            interpreter; integer I/O is (de)quantized automatically), a
            ``keras.Model`` / ``.keras`` path (run with Keras), a SavedModel
            folder (run with TensorFlow) or an ``.onnx`` path (run with ONNX
            Runtime on the CPU provider; needs ``kmot[onnx]``).
        data: ``(x, y)`` (x: an array or a tuple of arrays, one per input; y:
            labels or None), a dict, or an ``.npz`` path with ``x`` (or one array
            per input name) and ``y``. Without labels no task metric is computed.
        baseline: the candidate the others are compared with (default: the first).
        metrics: names ("accuracy", "top5", "mae", "rmse"), callables
            ``fn(y_true, y_pred) -> float``, or a dict ``{name: metric}``.
        runs: timed invocations per candidate.
        warmup: untimed invocations before timing.
        threads: LiteRT interpreter and ONNX Runtime threads (1: the most
            reproducible latency); TensorFlow's are the process's.
        batch_size: samples per timed invocation.
        memory: measure peak memory in child processes (a few seconds each).
        predict_batch_size: batch used to compute outputs for metrics and fidelity.
        progress: show a progress bar (default: when stderr is a terminal).
        provenance: ``{name: how it was made}`` for any candidates: a
            `kmot.evaluate.Provenance` or its dict (``steps``, ``export``, ``recipe``,
            ``source``, ``source_sha256``...), recorded in the report.
        remote: measure latency and peak memory on another machine instead: an
            ``ssh://[user@]host[:port]`` target or a `kmot.evaluate.remote.Remote`
            (LiteRT candidates only; the remote needs Python and ai-edge-litert).
            Metrics, fidelity, size and ops are still computed here, on the same
            files; the report's ``settings.remote`` names the machine.

    Returns:
        A `Report`.

    Raises:
        EvaluationError: bad candidates, options, metrics, or data that does not
            fit a candidate's inputs (checked for all before anything runs).

    Example:
        >>> report = compare({"float": "m.tflite", "int8": "m_int8.tflite"},
        ...                  data=(x_val, y_val), baseline="float")  # doctest: +SKIP
        >>> report.save("report/")                                   # doctest: +SKIP
    """
    _check_options(runs=runs, warmup=warmup, threads=threads, batch_size=batch_size,
                   predict_batch_size=predict_batch_size)
    named = _named(candidates)
    baseline = next(iter(named)) if baseline is None else baseline
    if baseline not in named:
        raise EvaluationError(
            f"Expected baseline to name a candidate: {list(named)}. Received: "
            f"baseline={baseline!r}"
        )
    made = _provenance(provenance, named)
    resolved = resolve_metrics(metrics)
    dataset = load_data(data)
    if dataset.y is None:
        resolved = []
    if dataset.num_samples < batch_size:
        raise EvaluationError(
            f"Latency is timed on the first batch_size samples. Expected at least "
            f"{batch_size} samples. Received: {dataset.num_samples}. Lower batch_size."
        )
    steps = len(named) * (3 + memory)
    with temporary_directory("evaluate") as workdir, \
            _progress(progress, steps) as step:
        runners, inputs = {}, {}
        for name, model in named.items():  # everything is checked before anything runs
            step(f"{name}: loading")
            with captured_output():  # the runtime's C++ "Created ... delegate" lines
                runners[name] = make_runner(name, model, threads=threads)
            inputs[name] = dataset.inputs_for(runners[name].specs, name)
        ordered = [baseline, *(n for n in named if n != baseline)]
        far = None
        if remote is not None:  # first: a connection problem stops before local work
            from kmot.evaluate.remote import measure_remote

            step(f"measuring on {getattr(remote, 'target', remote)}")
            far = measure_remote(remote, [runners[n] for n in ordered],
                                 {n: [a[:batch_size] for a in inputs[n]] for n in ordered},
                                 runs=runs, warmup=warmup, threads=threads,
                                 batch_size=batch_size, memory=memory)
        outputs, partial = {}, {}
        for name in ordered:
            outputs[name], partial[name] = _measure(
                runners[name], inputs[name], dataset.y, resolved, step=step, workdir=workdir,
                runs=runs, warmup=warmup, batch_size=batch_size,
                predict_batch_size=predict_batch_size, times=far and far.times[name])
            if far is not None:
                partial[name]["memory"] = far.memory[name]
                partial[name]["notes"] += far.notes[name]
            if name != baseline:
                partial[name]["fidelity"] = fidelity(outputs[baseline][0], outputs[name][0],
                                                     name=name)
                partial[name]["error_profile"] = error_profile(
                    dataset.y, outputs[baseline][0], outputs[name][0])
        if memory and far is None:  # after all timing: children never overlap a timed loop
            _measure_memory([runners[n] for n in ordered], partial, step=step, workdir=workdir,
                            threads=threads, batch_size=batch_size)
    base = partial[baseline]
    results = [CandidateResult(
        **p,
        metric_deltas={k: v - base["metrics"][k] for k, v in p["metrics"].items()},
        latency_ratio=p["latency"].p50_ms / max(base["latency"].p50_ms, 1e-9),
        provenance=made.get(p["name"]),
    ) for p in (partial[n] for n in ordered)]
    return Report(
        kmot_version=_kmot_version(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        environment=_environment(),
        settings=Settings(runs=runs, warmup=warmup, threads=threads, batch_size=batch_size,
                          num_samples=dataset.num_samples, memory=memory,
                          remote=far and far.machine),
        baseline=baseline,
        primary_metric=resolved[0].name if resolved else None,
        metrics=[MetricInfo(name=m.name, higher_is_better=m.higher_is_better)
                 for m in resolved],
        candidates=results,
    )


def _provenance(provenance: Mapping[str, Any] | None,
                named: Mapping[str, Any]) -> dict[str, Provenance]:
    """Each entry checked: a known candidate, and a Provenance or a dict of its fields."""
    if provenance is None:
        return {}
    if not isinstance(provenance, Mapping):
        raise EvaluationError(
            f"Expected provenance to be a dict {{candidate name: Provenance or dict}}. "
            f"Received: {type(provenance).__name__}")
    out = {}
    for name, entry in provenance.items():
        if name not in named:
            raise EvaluationError(
                f"Expected provenance keys to name candidates: {list(named)}. Received: {name!r}")
        try:
            out[name] = entry if isinstance(entry, Provenance) else Provenance.model_validate(entry)
        except ValidationError as err:
            first = err.errors()[0]
            where = error_location(first)
            raise EvaluationError(
                f"Expected provenance[{name!r}] to have the fields of kmot.evaluate.Provenance "
                f"(steps, export, recipe, recipe_sha256, source, source_sha256). Received: at "
                f"{where}: {first['msg']}") from None
    return out


def _measure(runner: Any, x: list[Any], y: Any, metrics: list[Any], *, step: Any, workdir: str,
             runs: int, warmup: int, batch_size: int, predict_batch_size: int,
             times: Any = None) -> tuple[list[Any], dict[str, Any]]:
    """One candidate's outputs, and its measurements but fidelity and memory
    (`times`: its latency samples when measured elsewhere)."""
    step(f"{runner.name}: predicting {len(x[0])} samples", 1)
    outputs = runner.predict(x, batch_size=predict_batch_size)
    step(f"{runner.name}: timing {runs} runs", 1)
    if times is None:
        times = runner.time([a[:batch_size] for a in x], runs=runs, warmup=warmup)
    measured = dict(
        name=runner.name, kind=runner.kind, source=runner.source,
        metrics={m.name: m(y, outputs[0]) for m in metrics}, fidelity=None,
        latency=summarize(times), size=runner.size(workdir), ops=runner.ops(),
        input_dtypes=runner.input_dtypes, output_dtypes=runner.output_dtypes,
        notes=list(getattr(runner, "notes", [])), memory=None)
    step(f"{runner.name}: measured", 1)
    return outputs, measured


def _measure_memory(runners: list[Any], partial: dict[str, dict[str, Any]], *, step: Any,
                    workdir: str, threads: int, batch_size: int) -> None:
    """Peak memory of each candidate; a failure becomes a note, not an error."""
    idle: dict[str, float] = {}  # one idle process per runtime
    for runner in runners:
        step(f"{runner.name}: peak memory (child process)")
        try:
            if runner.kind not in idle:
                idle[runner.kind] = peak_rss_mb(runner.kind, None, threads=threads)
            partial[runner.name]["memory"] = measure_peak_memory(
                runner.artifact(workdir), threads=threads, batch_size=batch_size,
                idle_mb=idle[runner.kind])
        except EvaluationError as err:
            partial[runner.name]["notes"].append(f"peak memory not measured: {err}")
        step(f"{runner.name}: peak memory measured", 1)


def _kmot_version() -> str:
    import kmot

    return kmot.__version__

