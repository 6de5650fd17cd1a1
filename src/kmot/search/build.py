"""Building a candidate (its recipe, run by `kmot.recipes.optimize`) and measuring it.

Each candidate is measured beside the baseline with `kmot.evaluate.compare` on the
validation data, and `kmot.evaluate.gate` decides whether it meets the budgets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmot.evaluate.budgets import Budgets
from kmot.search.stages import Candidate

__all__ = ["Context", "build", "measure", "score"]


@dataclass
class Context:
    """What every candidate of one search shares."""

    baseline: Any  # the Keras model
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    out: Path
    budgets: Budgets
    base_tflite: Path
    runs: int
    source: str | None = None

    @property
    def metrics(self) -> list[str]:
        return ["accuracy"] + ([self.budgets.metric] if self.budgets.metric != "accuracy" else [])

    @property
    def memory(self) -> bool:
        return self.budgets.max_peak_memory_mb is not None


def folder(ctx: Context, candidate: Candidate) -> Path:
    return ctx.out / "candidates" / candidate.name


def build(ctx: Context, candidate: Candidate, callbacks: Any = ()) -> tuple[Path, float]:
    """Runs the candidate's recipe; returns its .tflite and the seconds it took."""
    from kmot._quiet import captured_output
    from kmot.recipes import optimize

    start = time.perf_counter()
    with captured_output():
        result = optimize(ctx.baseline, candidate.recipe, train_data=ctx.train,
                          val_data=ctx.val, out_dir=folder(ctx, candidate), progress=False,
                          callbacks=callbacks)
    return result.tflite, time.perf_counter() - start


def provenance(ctx: Context, candidate: Candidate) -> dict[str, Any]:
    epochs = candidate.recipe["training"]["epochs"]
    steps = [{"technique": kind, "options": {**(options or {}),
                                            "epochs": (options or {}).get("epochs") or epochs}}
             for step in candidate.recipe["steps"] for kind, options in step.items()]
    qat = any("quantize" in s for s in candidate.recipe["steps"])
    export = candidate.recipe["export"].get("quantize") or ("int8" if qat else "float32")
    return {"steps": steps, "export": export, "recipe": candidate.name, "source": ctx.source}


def measure(ctx: Context, candidate: Candidate, tflite: Path) -> tuple[Any, Any]:
    """The candidate beside the baseline: its `Report` and the gate's `GateResult`."""
    from kmot.evaluate import compare, gate

    report = compare({"baseline": ctx.base_tflite, candidate.name: tflite}, data=ctx.val,
                     baseline="baseline", metrics=ctx.metrics, runs=ctx.runs,
                     memory=ctx.memory, progress=False,
                     provenance={candidate.name: provenance(ctx, candidate)})
    return report, gate(report, ctx.budgets, candidate=candidate.name)


def score(checks: list[dict[str, Any]], accuracy: float) -> float:
    """What Optuna maximizes: the accuracy when every budget is met; below any such
    candidate otherwise, by 1 plus how far the failed budgets are missed (relative)."""
    missed = [c for c in checks if not c["passed"]]
    if not missed:
        return accuracy
    far = sum(min(10.0, abs(c["value"] - c["limit"]) / max(abs(c["limit"]), 1e-9))
              if c["value"] is not None else 10.0 for c in missed)
    return accuracy - 1.0 - far
