"""`search`: the least compression that meets every budget, tried stage by stage."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kmot.errors import KmotError
from kmot.evaluate.budgets import BudgetsLike, load_budgets
from kmot.search import build as builder
from kmot.search import trials as optuna_side
from kmot.search.progress import Display
from kmot.search.results import (
    SearchResult,
    choose,
    entry,
    mask_url,
    recipe_yaml,
    write_chosen,
)
from kmot.search.space import STAGES, SearchError, SearchSpace, load_space
from kmot.search.stages import (
    Candidate,
    describe,
    qat_candidate,
    trial_candidate,
    untrained_candidates,
)

__all__ = ["search"]

#: Budgets a stronger compression can only miss by more.
ACCURACY_BUDGETS = ("max_accuracy_drop", "max_accuracy_drop_ci", "min_accuracy",
                    "min_argmax_agreement", "max_kl_divergence")


def _digest(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _worst_layers(baseline: Any, x: Any, space: SearchSpace, display: Display) -> list[str]:
    """Layer names, worst first, by the SNR each op loses under int8 PTQ."""
    from kmot.export import quantization_error

    try:
        ranked = quantization_error(baseline, x[:space.calibration_samples], quantize="int8",
                                    num_calibration_samples=space.calibration_samples)
    except KmotError as err:
        display.note(f"selective int8 skipped: the per-layer error could not be measured ({err})")
        return []
    names: list[str] = []
    for row in ranked.worst(len(ranked.layers)):
        for layer in row.layers:
            if layer not in names:
                names.append(layer)
    return names


class _Search:
    """One worker's search: its context, results, and the candidates' reports."""

    def __init__(self, ctx: builder.Context, space: SearchSpace, display: Display,
                 result: SearchResult, previous: dict[str, Any],
                 stop: Callable[[], bool] | None = None) -> None:
        self.ctx, self.space, self.display, self.result = ctx, space, display, result
        self.stop = stop or (lambda: False)
        self.reports: dict[str, Any] = {}
        self.previous = {e["name"]: e for e in previous.get("candidates", [])
                         if isinstance(e, dict) and "name" in e}

    def best(self) -> dict[str, Any] | None:
        return choose(self.result.candidates, STAGES)

    def _reuse(self, candidate: Candidate) -> dict[str, Any] | None:
        """An earlier run's measurement of this very recipe, gated again (the budgets
        may have changed)."""
        from kmot.evaluate import Report, gate

        old = self.previous.get(candidate.name)
        where = builder.folder(self.ctx, candidate)
        if not old or old.get("recipe_sha256") != _digest(candidate.recipe):
            return None
        try:
            report = Report.load(where / "report.json")
            verdict = gate(report, self.ctx.budgets, candidate=candidate.name)
        except KmotError:
            return None
        tflite = self.ctx.out / old["tflite"]
        if not tflite.is_file():
            return None
        self.reports[candidate.name] = report
        return {**entry(candidate, report, verdict, tflite=tflite, out=self.ctx.out,
                        seconds=old.get("seconds", 0.0), trial=old.get("trial")),
                "recipe_sha256": old["recipe_sha256"], "train_seconds": old.get("train_seconds", 0.0),
                "reused": True}

    def run(self, candidate: Candidate, *, trial: Any = None) -> dict[str, Any]:
        """Builds, measures and records one candidate."""
        from kmot._files import write_atomic

        reused = None if trial is not None else self._reuse(candidate)
        if reused is not None:
            return self._record(reused)
        where = builder.folder(self.ctx, candidate)
        where.mkdir(parents=True, exist_ok=True)
        write_atomic(where / "recipe.yaml", recipe_yaml(candidate.recipe, self.ctx.budgets))
        start = time.perf_counter()
        callbacks = []
        if candidate.trained:
            callbacks = [optuna_side.EpochReporter(self.ctx.val, total=candidate.epochs,
                                                   trial=trial, display=self.display)]
        tflite, built = builder.build(self.ctx, candidate, callbacks)
        self.display.measuring()
        report, verdict = builder.measure(self.ctx, candidate, tflite)
        write_atomic(where / "report.json", report.to_json())
        self.reports[candidate.name] = report
        done = entry(candidate, report, verdict, tflite=tflite, out=self.ctx.out,
                     seconds=time.perf_counter() - start,
                     trial=None if trial is None else trial.number)
        done["recipe_sha256"] = _digest(candidate.recipe)
        done["train_seconds"] = round(built, 3) if candidate.trained else 0.0
        return self._record(done)

    def _record(self, done: dict[str, Any]) -> dict[str, Any]:
        self.result.candidates = [e for e in self.result.candidates if e["name"] != done["name"]]
        self.result.candidates.append(done)
        best = self.best()
        self.result.chosen = best["name"] if best else None
        self.result.save()
        self.display.done(done, best)
        return done

    def untrained_and_qat(self, stage: str, baseline: Any, x: Any) -> bool:
        """Runs one non-search stage in order; True when a candidate met the budgets."""
        if stage == "qat":
            candidates = [qat_candidate(self.space)]
        else:
            worst = (_worst_layers(baseline, x, self.space, self.display)
                     if stage == "selective" else None)
            candidates = [c for c in untrained_candidates(
                self.space.model_copy(update={"stages": [stage]}), worst) if c.stage == stage]
        for candidate in candidates:
            if self.stop():
                raise KeyboardInterrupt
            self.display.candidate(f"{stage}: {candidate.name}")
            try:
                if self.run(candidate)["meets_budgets"]:
                    return True  # the least invasive one that meets every budget
            except Exception as err:  # noqa: BLE001 - one candidate failing is not the search's end
                self.failed(candidate.name, err)
        return False

    def failed(self, name: str, err: BaseException) -> None:
        """A candidate that could not be built or measured: recorded, and the search goes on."""
        detail = f"{type(err).__name__}: {err}"
        self.result.failed.append({"name": name, "error": detail[:2000]})
        self.result.save()
        self.display.note(f"{name} failed: {detail[:300]}")

    @staticmethod
    def _drawn(study: Any) -> list[dict[str, Any]]:
        drawn = [t.params for t in study.get_trials(deepcopy=False)]
        return drawn + [t.system_attrs.get("fixed_params") for t in study.get_trials(
            deepcopy=False, states=(optuna_side.waiting_state(),))]

    def _explore(self, study: Any) -> None:
        """Queues a configuration no trial has drawn, so the next trial explores."""
        import random

        drawn = self._drawn(study)
        fresh = [c for c in self.space.grid() if c not in drawn]
        if fresh:
            study.enqueue_trial(random.Random(len(drawn)).choice(fresh))

    def _follow(self, study: Any, config: dict[str, Any], ruled_out_by: list[str]) -> None:
        """Queues the next strength of the same technique, the way the budgets point: a
        trial too large or slow is followed by a stronger one, a trial that met every
        budget or missed only the accuracy ones by a weaker (more accurate) one."""
        cost = [b for b in ruled_out_by if b not in ACCURACY_BUDGETS]
        accuracy = [b for b in ruled_out_by if b in ACCURACY_BUDGETS]
        if cost and accuracy:
            return  # stronger loses more accuracy, weaker is larger: neither helps
        follow = self.space.neighbour(config, stronger=bool(cost))
        if follow is not None and follow not in self._drawn(study):
            study.enqueue_trial(follow)

    def trials(self, study: Any, n: int, worker: str) -> None:
        import optuna

        done, calls = [0], [0]

        def objective(trial: Any) -> float:
            calls[0] += 1
            # Queue a configuration only while this worker has a trial left to take it,
            # so a search does not end with queued trials nobody runs.
            queue = calls[0] < n
            config = self.space.suggest(trial)
            trial.set_user_attr("worker", worker)
            candidate = trial_candidate(self.space, config, trial.number)
            # "RUNNING" until it ends: a Ctrl-C at any point leaves a record with a state
            record: dict[str, Any] = {"number": trial.number, "params": config,
                                      "candidate": candidate.name, "state": "RUNNING"}
            self.result.trials.append(record)
            try:
                return attempt(trial, config, candidate, record, queue)
            except KeyboardInterrupt:
                trial.set_user_attr("interrupted", True)
                record.update(state="FAIL", detail="interrupted")
                raise

        def attempt(trial: Any, config: dict, candidate: Any, record: dict[str, Any],
                    queue: bool) -> float:
            duplicate = optuna_side.find_duplicate(study, trial, trial.params)
            if duplicate is not None:  # that configuration ran (or runs) already
                trial.set_user_attr("duplicate_of", duplicate.number)
                if queue:
                    self._explore(study)
                record.update(state=duplicate.state.name, value=duplicate.value,
                              duplicate_of=duplicate.number, seconds=0.0)
                self.result.save()
                if duplicate.state.name == "PRUNED":
                    raise optuna.TrialPruned(f"same configuration as trial {duplicate.number}")
                return float(duplicate.value)
            trial.set_user_attr("epochs", candidate.epochs)
            trial.set_user_attr("candidate", candidate.name)
            done[0] += 1
            self.display.candidate(f"trial {trial.number} ({done[0]}/{n}): {describe(config)}")
            start = time.perf_counter()
            try:
                measured = self.run(candidate, trial=trial)
            except optuna.TrialPruned as stop:
                record.update(state="PRUNED", detail=str(stop),
                              stopped_at_epoch=trial.user_attrs.get("stopped_at_epoch"),
                              seconds=round(time.perf_counter() - start, 3))
                self.result.save()
                if queue:
                    self._follow(study, config, ["max_accuracy_drop"])
                raise
            except Exception as err:  # recorded; Optuna marks the trial failed and goes on
                record.update(state="FAIL", detail=f"{type(err).__name__}: {err}"[:2000],
                              seconds=round(time.perf_counter() - start, 3))
                self.failed(candidate.name, err)
                raise
            value = builder.score(measured["checks"], measured["metrics"]["accuracy"])
            trial.set_user_attr("metrics", {k: measured["metrics"][k] for k in
                                            ("accuracy", "p50_ms", "bytes", "gzip_bytes")})
            trial.set_user_attr("meets_budgets", measured["meets_budgets"])
            record.update(state="COMPLETE", value=value, seconds=measured["seconds"])
            self.result.save()
            if queue:
                self._follow(study, config, measured["ruled_out_by"])
            return value

        def after(study: Any, trial: Any) -> None:
            if self.stop():  # a Ctrl-C a library swallowed: stop after this trial
                self.result.interrupted = True
                study.stop()

        study.optimize(objective, n_trials=n, catch=(Exception,), gc_after_trial=True,
                       callbacks=[after])


def _check(trials: Any, study: Any) -> None:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 0:
        raise SearchError(f"Expected trials to be an int >= 0. Received: trials={trials!r}")
    if not isinstance(study, str) or not study.strip():
        raise SearchError(f"Expected a non-empty study name. Received: study={study!r}")


def search(
    model: Any,
    budgets: BudgetsLike,
    *,
    data: Any,
    val: Any,
    out: str | os.PathLike,
    trials: int = 20,
    storage: str | None = None,
    study: str = "kmot-search",
    space: SearchSpace | dict[str, Any] | str | os.PathLike | None = None,
    progress: bool | None = None,
    stop: Callable[[], bool] | None = None,
) -> SearchResult:
    """Finds the least invasive compression that meets every budget, measured on LiteRT.

    Stages run from least to most invasive and the search stops at the first that
    has a candidate meeting every budget: post-training quantization (float16,
    dynamic, int8; no training), selective int8 (the layers `quantization_error`
    ranks worst stay float) and int16x8, QAT, then `trials` Optuna trials over the
    training-based techniques (pruning, channel pruning, factorization, clustering,
    PQAT, CQAT, PCQAT) and their strengths. Every candidate is a recipe, built by
    `kmot.recipes.optimize`, measured beside the baseline by `kmot.evaluate.compare`
    and judged by `kmot.evaluate.gate`.

    Args:
        model: the baseline: a Keras model or a ``.keras`` path.
        budgets: the gate's budgets (a dict, a `Budgets`, or a YAML path).
        data: training data, ``(x, y)`` or an ``.npz`` with arrays ``x`` and ``y``.
        val: validation data, the same form: every candidate is measured on it.
        out: the output folder (``search.json``, ``chosen.tflite``, ``chosen.yaml``,
            ``report/``, ``candidates/``, and the study's SQLite file by default).
        trials: search trials this worker runs (an interrupted run started again on
            the same folder counts the ones it finished).
        storage: an Optuna RDB URL shared by workers (default: SQLite in `out`).
        study: the study's name in the storage.
        space: the search space (see `kmot.search.SearchSpace`).
        progress: show the live display (default: when stderr is a terminal).
        stop: called between candidates and trials; True stops the search as Ctrl-C
            does (what was found is kept, ``result.interrupted`` is set).

    Returns:
        A `SearchResult`; ``result.chosen`` names the chosen candidate, or is None.

    Raises:
        BudgetError: invalid budgets. SearchError: an invalid space, option or storage.
        RecipeError: data that is missing or does not fit the model.

    Example:
        >>> result = search("base.keras", {"max_accuracy_drop": 0.01, "max_gzip_bytes": 35000},
        ...                 data="train.npz", val="val.npz", out="search/")  # doctest: +SKIP
        >>> result.chosen                                                    # doctest: +SKIP
        'trial_0002_pqat'
    """
    from kmot.evaluate import compare
    from kmot.export import load_model, to_litert
    from kmot.recipes.run import _check_fits, _xy

    limits = load_budgets(budgets)
    space = load_space(space)
    _check(trials, study)
    baseline = load_model(model)
    train, validation = _xy(data, "training data"), _xy(val, "validation data")
    _check_fits(baseline, *train, "training data")
    _check_fits(baseline, *validation, "validation data")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or optuna_side.default_storage(folder)
    if "search" in space.stages and trials > 0:
        optuna_side.check_storage(url)  # a bad URL fails before any work
    worker = f"{socket.gethostname()}:{folder.resolve()}"
    previous = SearchResult.load_previous(folder)
    started = time.perf_counter()
    result = SearchResult(out=folder)
    result.info = {
        "model": os.fspath(model) if isinstance(model, (str, os.PathLike)) else baseline.name,
        "budgets": {"metric": limits.metric, **limits.limits()},
        "space": space.model_dump(mode="json"),
        "study": {"storage": mask_url(url), "name": study, "worker": worker},
        "stages": [s for s in STAGES if s in space.stages],
    }
    # Trials finished by an earlier run in this folder stay (the study holds them too).
    result.trials = [t for t in previous.get("trials", []) if t.get("state") in ("COMPLETE", "PRUNED")]
    base_tflite = folder / "baseline.tflite"
    to_litert(baseline, base_tflite)
    ctx = builder.Context(baseline=baseline, train=train, val=validation, out=folder,
                          budgets=limits, base_tflite=base_tflite, runs=space.runs,
                          source=result.info["model"])
    base_report = compare({"baseline": base_tflite}, data=validation, metrics=ctx.metrics,
                          runs=space.runs, memory=ctx.memory, progress=False)
    b = base_report.candidate("baseline")
    result.baseline = {"tflite": "baseline.tflite", "metrics": {
        **b.metrics, "p50_ms": b.latency.p50_ms, "p90_ms": b.latency.p90_ms,
        "bytes": b.size.bytes, "gzip_bytes": b.size.gzip_bytes}}
    with Display(progress) as display:
        run = _Search(ctx, space, display, result, previous, stop)
        for e in previous.get("candidates", []):  # earlier trials' candidates, gated again
            if isinstance(e, dict) and e.get("stage") == "search" and e.get("trial") is not None:
                params = e.get("params") or {}
                again = run._reuse(trial_candidate(space, params, e["trial"])) \
                    if params.get("technique") in space.techniques else None
                if again is not None:
                    result.candidates.append(again)
        try:
            for stage in result.info["stages"]:
                result.info["stopped_at_stage"] = stage
                if stage != "search":
                    if run.untrained_and_qat(stage, baseline, train[0]):
                        break
                    continue
                _search_stage(run, ctx, space, url, study, worker, trials, b.metrics.get("accuracy"))
                break
        except KeyboardInterrupt:
            result.interrupted = True
        display.candidate("writing the report")
        best = choose(result.candidates, STAGES)
        result.chosen = best["name"] if best else None
        result.info["wall_seconds"] = round(time.perf_counter() - started, 3)
        result.info["train_seconds"] = round(
            sum(e.get("train_seconds", 0.0) for e in result.candidates if not e.get("reused"))
            + sum(t.get("seconds", 0.0) for t in result.trials if t.get("state") == "PRUNED"), 3)
        write_chosen(result)
        result.save()
        from kmot.search.report import save_report

        save_report(result, {n: run.reports[n] for n in (e["name"] for e in result.candidates)
                             if n in run.reports}, limits)
    return result


def _search_stage(run: _Search, ctx: builder.Context, space: SearchSpace, url: str, study: str,
                  worker: str, trials: int, base_accuracy: float | None) -> None:
    if trials == 0:
        return
    required = optuna_side.required_accuracy(ctx.budgets, base_accuracy)
    pruner = optuna_side.BudgetPruner(required, space.prune_slack)
    probe = optuna_side.open_study(url, study, pruner=pruner, seed=0)
    mine = [t for t in probe.get_trials(deepcopy=False)
            if t.user_attrs.get("worker") == worker and t.state.name in optuna_side.FINISHED]
    shared = optuna_side.open_study(
        url, study, pruner=pruner, seed=optuna_side.worker_seed(worker, space.seed, len(mine)))
    for t in optuna_side.interrupted_to_retry(shared, worker):
        shared.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    if not shared.get_trials(deepcopy=False):  # a new study: scan each technique first
        for config in space.scan()[:trials]:
            shared.enqueue_trial(config)
    remaining = trials - len(mine)
    run.result.info["study"]["trials_before"] = len(mine)
    if remaining > 0:
        run.trials(shared, remaining, worker)
