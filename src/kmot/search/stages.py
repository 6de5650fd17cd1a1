"""Candidates as recipes, from least to most invasive.

Every candidate is a `kmot.recipes` recipe, so the one a search chooses is
reproduced by ``kmot optimize`` from its YAML. Untrained stages come first
(post-training quantization, then selective int8 that keeps the layers
`quantization_error` ranks worst in float, and int16x8), then QAT, then the
training-based techniques whose strength Optuna searches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kmot.search.space import TECHNIQUES, SearchSpace

__all__ = ["Candidate", "qat_candidate", "trial_candidate", "untrained_candidates"]


@dataclass(frozen=True)
class Candidate:
    """One thing to build and measure: a recipe, and where it sits in the order."""

    name: str
    stage: str
    techniques: tuple[str, ...]
    recipe: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return bool(self.recipe.get("steps"))

    @property
    def epochs(self) -> int:
        """Fine-tuning epochs over all steps."""
        default = self.recipe["training"]["epochs"]
        return sum((next(iter(s.values())) or {}).get("epochs") or default
                   for s in self.recipe.get("steps", []))


def _recipe(space: SearchSpace, name: str, steps: list[dict[str, Any]],
            export: str | None, keep_float: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "seed": space.seed,
        "training": {"epochs": space.epochs, "batch_size": space.batch_size,
                     "learning_rate": space.learning_rate, "schedule": space.schedule},
        "steps": steps,
        "export": {"quantize": export, "calibration_samples": space.calibration_samples},
        # The search measures candidates itself; the saved YAML turns these back on.
        "evaluate": None,
    }
    if keep_float:
        out["export"]["keep_float"] = list(keep_float)
    return out


def untrained_candidates(space: SearchSpace, worst_layers: list[str] | None = None
                         ) -> list[Candidate]:
    """The no-training stages: PTQ modes, then selective int8 and int16x8.

    Args:
        space: the search space.
        worst_layers: layer names, worst first (from `quantization_error`); needed by
            the selective stage.
    """
    out = []
    if "ptq" in space.stages:
        for mode in space.ptq:  # float16 < dynamic < int8: least to most invasive
            out.append(Candidate(f"ptq_{mode}", "ptq", (f"ptq {mode}",),
                                 _recipe(space, f"ptq_{mode}", [], mode)))
    if "selective" in space.stages:
        worst = list(worst_layers or [])
        for n in sorted(set(space.keep_float)):
            if n > len(worst):
                break
            keep = worst[:n]
            out.append(Candidate(f"int8_keep{n}", "selective", ("ptq int8", "keep float"),
                                 _recipe(space, f"int8_keep{n}", [], "int8", keep),
                                 {"keep_float": keep}))
        if space.int16x8:
            out.append(Candidate("ptq_int16x8", "selective", ("ptq int16x8",),
                                 _recipe(space, "ptq_int16x8", [], "int16x8")))
    return out


def qat_candidate(space: SearchSpace) -> Candidate:
    """Quantization-aware training at int8, no other technique."""
    return Candidate("qat_int8", "qat", ("quantize",),
                     _recipe(space, "qat_int8", [{"quantize": {"scheme": "int8"}}], None))


def _steps(config: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The recipe steps and export mode of one search configuration."""
    t = config["technique"]
    knob = {k.split(".", 1)[1]: v for k, v in config.items() if k.startswith(f"{t}.")}
    export = knob.pop("export", None)
    teacher = knob.pop("teacher", False)
    sparsity = {"final_sparsity": knob.get("final_sparsity")}
    clusters = {"number_of_clusters": knob.get("number_of_clusters")}
    steps = {
        "prune": lambda: [{"prune": sparsity}],
        "prune_channels": lambda: [{"prune_channels": {"sparsity": knob["sparsity"]}}],
        "factorize": lambda: [{"factorize": {"compression": float(knob["compression"])}}],
        "cluster": lambda: [{"cluster": clusters}],
        "pqat": lambda: [{"prune": sparsity},
                         {"quantize": {"scheme": "int8", "preserve_sparsity": True}}],
        "cqat": lambda: [{"cluster": clusters},
                         {"quantize": {"scheme": "int8", "preserve_clusters": True}}],
        "pcqat": lambda: [{"prune": sparsity},
                          {"cluster": {**clusters, "preserve_sparsity": True}},
                          {"quantize": {"scheme": "int8", "preserve_sparsity": True,
                                        "preserve_clusters": True}}],
    }[t]()
    if teacher:
        steps.append({"distill": {"teacher": "baseline"}})
    return steps, None if TECHNIQUES[t]["qat"] or export == "float32" else export


def describe(config: dict[str, Any]) -> str:
    """``pqat final_sparsity=0.8``: a configuration in one short line."""
    t = config["technique"]
    knobs = " ".join(f"{k.split('.', 1)[1]}={v}" for k, v in config.items()
                     if k.startswith(f"{t}."))
    return f"{t} {knobs}".strip()


def trial_candidate(space: SearchSpace, config: dict[str, Any], number: int) -> Candidate:
    """The candidate of search trial `number`."""
    steps, export = _steps(config)
    name = f"trial_{number:04d}_{config['technique']}"
    kinds = tuple(next(iter(s)) for s in steps) + ((f"ptq {export}",) if export else ())
    return Candidate(name, "search", kinds, _recipe(space, name, steps, export),
                     {k: v for k, v in config.items()})
