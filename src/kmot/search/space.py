"""The search space: which stages run, and the knobs of the training-based techniques.

```yaml
stages: [ptq, selective, qat, search]   # least to most invasive; drop any
epochs: 5                               # fine-tuning epochs per recipe step
ptq: [float16, dynamic, int8]           # post-training quantization, no training
keep_float: [1, 2]                      # selective int8: the n worst layers stay float
int16x8: true                           # selective: int16 activations, int8 weights
techniques:                             # searched by Optuna: each knob a list of values
  prune: {final_sparsity: [0.5, 0.6, 0.7, 0.8, 0.9]}
  pqat: {final_sparsity: [0.5, 0.6, 0.7, 0.8, 0.9]}
export: [float32, int8]                 # how non-QAT techniques export
teacher: [false]                        # [false, true]: also try distilling from the baseline
prune_slack: 0.1                        # see `BudgetPruner`
```

Every knob is a list of values, so the space is a finite grid (`grid`) that a
benchmark can run exhaustively, and Optuna samples it (`suggest`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kmot.errors import KmotError

__all__ = ["STAGES", "TECHNIQUES", "SearchError", "SearchSpace", "load_space"]


class SearchError(KmotError, ValueError):
    """A search's space, options or data do not fit."""


#: Stages from least to most invasive; a search stops at the first that meets the budgets.
STAGES = ("ptq", "selective", "qat", "search")

#: Training-based techniques, from least to most invasive: their knobs (with default
#: values) and whether they are QAT.
TECHNIQUES: dict[str, dict[str, Any]] = {
    "prune": {"knobs": {"final_sparsity": [0.5, 0.6, 0.7, 0.8, 0.9]}, "qat": False},
    "prune_channels": {"knobs": {"sparsity": [0.25, 0.5]}, "qat": False},
    "factorize": {"knobs": {"compression": [2.0, 4.0]}, "qat": False},
    "cluster": {"knobs": {"number_of_clusters": [8, 16, 32]}, "qat": False},
    "pqat": {"knobs": {"final_sparsity": [0.5, 0.6, 0.7, 0.8, 0.9]}, "qat": True},
    "cqat": {"knobs": {"number_of_clusters": [8, 16, 32]}, "qat": True},
    "pcqat": {"knobs": {"final_sparsity": [0.5, 0.7, 0.8], "number_of_clusters": [8, 16]},
              "qat": True},
}
#: Whether a larger value of the knob compresses more.
STRONGER_UP = {"final_sparsity": True, "sparsity": True, "compression": True,
               "number_of_clusters": False}
# Distillation after a mask or clustering would undo it; structural changes survive it.
TEACHER_TECHNIQUES = ("prune_channels", "factorize")


def _default_techniques() -> dict[str, dict[str, list[Any]]]:
    return {name: {k: list(v) for k, v in spec["knobs"].items()}
            for name, spec in TECHNIQUES.items()}


class SearchSpace(BaseModel):
    """What a search tries; every field optional (see the module docstring).

    Example:
        >>> space = SearchSpace(techniques={"prune": {"final_sparsity": [0.5, 0.8]}})
        >>> len(list(space.grid()))
        4
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: list[Literal["ptq", "selective", "qat", "search"]] = Field(
        default_factory=lambda: list(STAGES), min_length=1)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    schedule: Literal["constant", "cosine"] = "constant"
    seed: int = 0
    ptq: list[Literal["float16", "dynamic", "int8"]] = Field(
        default_factory=lambda: ["float16", "dynamic", "int8"])
    keep_float: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2])
    int16x8: bool = True
    techniques: dict[str, dict[str, list[Any]]] = Field(default_factory=_default_techniques)
    export: list[Literal["float32", "dynamic", "int8"]] = Field(
        default_factory=lambda: ["float32", "int8"], min_length=1)
    teacher: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    prune_slack: float = Field(0.1, ge=0, le=1)
    calibration_samples: int = Field(200, ge=1)
    runs: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _known_knobs(self) -> SearchSpace:
        for name, knobs in self.techniques.items():
            if name not in TECHNIQUES:
                raise ValueError(f"unknown technique {name!r}; expected one of "
                                 + ", ".join(TECHNIQUES))
            allowed = TECHNIQUES[name]["knobs"]
            for knob, values in (knobs or {}).items():
                if knob not in allowed:
                    raise ValueError(f"technique {name!r} has no knob {knob!r}; expected "
                                     + ", ".join(allowed))
                if not isinstance(values, list) or not values:
                    raise ValueError(f"{name}.{knob} must be a non-empty list of values, "
                                     f"e.g. {allowed[knob]}; received {values!r}")
        if "search" in self.stages and not self.techniques:
            raise ValueError("the search stage needs at least one technique in `techniques`")
        return self

    def knobs(self, technique: str) -> dict[str, list[Any]]:
        """The technique's knobs: the space's lists, defaults for those not given."""
        given = self.techniques.get(technique) or {}
        return {k: list(given.get(k, v)) for k, v in TECHNIQUES[technique]["knobs"].items()}

    def _options(self, technique: str) -> dict[str, list[Any]]:
        options = {f"{technique}.{k}": v for k, v in self.knobs(technique).items()}
        if not TECHNIQUES[technique]["qat"]:
            options[f"{technique}.export"] = list(self.export)
        if technique in TEACHER_TECHNIQUES and len(set(self.teacher)) > 1:
            options[f"{technique}.teacher"] = list(self.teacher)
        return options

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every configuration of the search stage: ``{"technique": ..., "name.knob": ...}``."""
        for technique in self.techniques:
            options = self._options(technique)
            for values in itertools.product(*options.values()):
                yield {"technique": technique, **dict(zip(options, values))}

    def scan(self) -> list[dict[str, Any]]:
        """One configuration per technique at the middle of each knob's values (and its
        most compressing export): the first trials of a new study, before Optuna's
        sampler has anything to learn from. Least invasive first (`TECHNIQUES` order,
        whatever the order the space lists them in, which YAML may sort): the
        follow-ups each trial queues then run in that order too."""
        out = []
        for technique in sorted(self.techniques, key=list(TECHNIQUES).index):
            config = {"technique": technique}
            for key, values in self._options(technique).items():
                config[key] = values[-1] if key.endswith(".export") else values[len(values) // 2]
            out.append(config)
        return out

    def neighbour(self, config: dict[str, Any], *, stronger: bool) -> dict[str, Any] | None:
        """The same configuration one step stronger (or weaker) on its first knob, or None
        at the end of its values."""
        technique = config["technique"]
        knob = next(iter(TECHNIQUES[technique]["knobs"]))
        key = f"{technique}.{knob}"
        values = self.knobs(technique)[knob]
        if config.get(key) not in values:
            return None
        i = values.index(config[key]) + (1 if stronger == STRONGER_UP[knob] else -1)
        return {**config, key: values[i]} if 0 <= i < len(values) else None

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One configuration sampled by an Optuna trial (same keys as `grid`)."""
        technique = trial.suggest_categorical("technique", list(self.techniques))
        config = {"technique": technique}
        for key, values in self._options(technique).items():
            config[key] = trial.suggest_categorical(key, values)
        return config


def load_space(space: SearchSpace | dict[str, Any] | str | os.PathLike | None) -> SearchSpace:
    """A validated `SearchSpace` from itself, a dict, a YAML path, or None (the default).

    Raises:
        SearchError: a missing or invalid file, an unknown field, technique or knob.

    Example:
        >>> load_space({"stages": ["ptq"]}).stages
        ['ptq']
    """
    if space is None:
        return SearchSpace()
    if isinstance(space, SearchSpace):
        return space
    source = "the space dict"
    if isinstance(space, (str, os.PathLike)):
        import yaml

        from kmot import _yaml

        path = Path(space)
        source = str(path)
        if not path.is_file():
            raise SearchError(f"No such search space file. Expected a YAML file. Received: {path}")
        try:
            space = _yaml.load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise SearchError(f"Expected {path} to be valid YAML. Received: "
                              f"{_yaml.describe(err)}") from None
    if not isinstance(space, dict):
        raise SearchError(f"Expected {source} to be a mapping (see docs/search.md). "
                          f"Received: {type(space).__name__}")
    try:
        return SearchSpace.model_validate(space)
    except ValidationError as err:
        problems = [f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']} "
                    f"(received {e.get('input')!r:.80})" for e in err.errors()]
        raise SearchError(f"Invalid search space in {source}: " + "; ".join(problems)
                          + ". Fix these fields; docs/search.md lists them.") from None
