"""A search's results: one entry per candidate, ``search.json``, the chosen files, the report.

``search.json`` is rewritten (atomically) after every candidate, so a search stopped
at any point leaves what it found.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmot.search.stages import Candidate

__all__ = ["SearchResult", "closest", "entry", "front"]

FILE = "search.json"


def entry(candidate: Candidate, report: Any, gate: Any, *, tflite: Path, out: Path,
          seconds: float, trial: int | None = None) -> dict[str, Any]:
    """One candidate's line in search.json."""
    c = report.candidate(candidate.name)
    metrics = {"accuracy": c.metrics.get("accuracy"), **c.metrics,
               "p50_ms": c.latency.p50_ms, "p90_ms": c.latency.p90_ms,
               "p99_ms": c.latency.p99_ms, "latency_ratio": c.latency_ratio,
               "bytes": c.size.bytes, "gzip_bytes": c.size.gzip_bytes}
    if c.memory is not None:
        metrics["peak_memory_mb"] = c.memory.net_mb
    checks = [{"budget": k.budget, "value": k.value, "limit": k.limit, "passed": k.passed,
               "detail": k.detail} for k in gate.checks]
    return {
        "name": candidate.name, "stage": candidate.stage,
        "techniques": list(candidate.techniques), "trained": candidate.trained,
        "params": candidate.params, "trial": trial,
        "metrics": metrics, "checks": checks, "meets_budgets": gate.passed,
        "ruled_out_by": [k.budget for k in gate.checks if not k.passed],
        "tflite": str(tflite.relative_to(out)) if tflite.is_relative_to(out) else str(tflite),
        "recipe": f"candidates/{candidate.name}/recipe.yaml",
        "seconds": round(seconds, 3),
    }


def front(entries: list[dict[str, Any]]) -> list[str]:
    """Names on the accuracy vs gzip-size Pareto front (no other is smaller and at
    least as accurate)."""
    out = []
    for e in entries:
        a, s = e["metrics"]["accuracy"], e["metrics"]["gzip_bytes"]
        if not any(o is not e and o["metrics"]["accuracy"] >= a and o["metrics"]["gzip_bytes"] <= s
                   and (o["metrics"]["accuracy"] > a or o["metrics"]["gzip_bytes"] < s)
                   for o in entries):
            out.append(e["name"])
    return out


def closest(entries: list[dict[str, Any]], n: int = 3) -> list[str]:
    """The candidates nearest to meeting every budget: fewest failed checks, then the
    smallest relative miss."""
    def miss(e: dict[str, Any]) -> tuple[int, float]:
        failed = [c for c in e["checks"] if not c["passed"]]
        far = sum(abs(c["value"] - c["limit"]) / max(abs(c["limit"]), 1e-9)
                  if c["value"] is not None else 10.0 for c in failed)
        return len(failed), far
    return [e["name"] for e in sorted(entries, key=miss)[:n]]


def choose(entries: list[dict[str, Any]], stages: tuple[str, ...]) -> dict[str, Any] | None:
    """The chosen candidate: in the first stage that has one meeting every budget, the
    most accurate of those (then the smallest)."""
    for stage in stages:
        met = [e for e in entries if e["stage"] == stage and e["meets_budgets"]]
        if met:
            if stage != "search":  # ordered least to most invasive: the first one
                return met[0]
            return max(met, key=lambda e: (e["metrics"]["accuracy"], -e["metrics"]["gzip_bytes"]))
    return None


@dataclass
class SearchResult:
    """What a search found; ``passed`` when a candidate meets every budget."""

    out: Path
    candidates: list[dict[str, Any]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
    chosen: str | None = None
    interrupted: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.chosen is not None

    def candidate(self, name: str) -> dict[str, Any]:
        return next(e for e in self.candidates if e["name"] == name)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, **self.info, "baseline": self.baseline,
                "candidates": self.candidates, "trials": self.trials,
                "chosen": self.chosen,
                "chosen_tflite": "chosen.tflite" if self.chosen else None,
                "chosen_recipe": "chosen.yaml" if self.chosen else None,
                "front": front(self.candidates), "closest": closest(self.candidates),
                "failed": self.failed,
                "interrupted": self.interrupted}

    def save(self) -> Path:
        from kmot._files import write_atomic

        return write_atomic(self.out / FILE, json.dumps(self.to_dict(), indent=2) + "\n")

    @staticmethod
    def load_previous(out: Path) -> dict[str, Any]:
        """An earlier run's search.json in `out`, or {} when there is none readable."""
        try:
            data = json.loads((out / FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def write_chosen(result: SearchResult) -> None:
    """The chosen .tflite and a recipe that `kmot optimize` reproduces it with (and gates)."""
    from kmot._files import copy_atomically, write_atomic

    out = result.out
    if result.chosen is None:
        for name in ("chosen.tflite", "chosen.yaml"):
            (out / name).unlink(missing_ok=True)
        return
    chosen = result.candidate(result.chosen)
    copy_atomically(out / chosen["tflite"], out / "chosen.tflite")
    write_atomic(out / "chosen.yaml", (out / chosen["recipe"]).read_bytes())


def recipe_yaml(recipe: dict[str, Any], budgets: Any) -> str:
    """The recipe as YAML, with evaluation and the search's budgets as its gate."""
    import yaml

    runnable = {**recipe, "evaluate": {"runs": 50, "warmup": 5,
                                       "memory": budgets.max_peak_memory_mb is not None},
                "gate": {**({"metric": budgets.metric} if budgets.metric != "accuracy" else {}),
                         **budgets.limits()}}
    runnable["export"] = {k: v for k, v in runnable["export"].items() if v is not None}
    return ("# Reproduce with: kmot optimize MODEL.keras --recipe this.yaml --data TRAIN.npz "
            "--val VAL.npz\n" + yaml.safe_dump(runnable, sort_keys=False))


def mask_url(url: str) -> str:
    """A storage URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
