"""The recipe schema: a declarative pipeline, validated field by field.

A recipe (YAML) names the steps that turn a baseline into a deployable model:
``steps`` (prune, prune_channels, factorize, cluster, quantize, distill) fine-tune in turn, then
``export`` writes the LiteRT file (with post-training quantization if asked),
``evaluate`` compares it with the baseline, ``gate`` checks budgets and
``register`` pushes the artifact to the model registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kmot.errors import KmotError

__all__ = ["Recipe", "RecipeError", "load_recipe"]


class RecipeError(KmotError, ValueError):
    """A recipe file is missing, malformed, or names an invalid value."""


#: The step kinds a recipe's ``steps`` may name, in the order they are documented.
STEP_KINDS = ("prune", "prune_channels", "factorize", "cluster", "quantize", "distill")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Training(_Strict):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    # "cosine": from learning_rate to 0 over each step's fine-tuning (BatchNorm's moving
    # statistics then catch up with the weights; see the README's structured pruning)
    schedule: Literal["constant", "cosine"] = "constant"
    from_logits: bool = True


class PruneStep(_Strict):
    kind: Literal["prune"] = "prune"
    final_sparsity: float = Field(0.8, ge=0, lt=1)
    initial_sparsity: float = Field(0.0, ge=0, lt=1)
    end_fraction: float = Field(0.7, gt=0, le=1)
    updates: int = Field(20, ge=1)
    allocation: Literal["uniform", "global"] = "uniform"
    sparsity_m_by_n: tuple[int, int] | None = None
    epochs: int | None = Field(None, ge=1)


class PruneChannelsStep(_Strict):
    """Structured pruning: channels removed, so the exported model runs fewer MACs.

    One-shot (the default): `kmot.sparsity.prune_channels`, then fine-tuning.
    ``gradual: true``: channel masks ramped by a polynomial schedule over
    ``end_fraction`` of the fine-tuning (`mask_channels`), then the masked channels
    removed (`remove_masked_channels`).
    """

    kind: Literal["prune_channels"] = "prune_channels"
    sparsity: float = Field(0.5, ge=0, lt=1)
    importance: Literal["l1", "l2", "bn", "taylor"] = "l2"
    allocation: Literal["uniform", "global"] = "uniform"
    round_to: int = Field(1, ge=1)
    gradual: bool = False
    end_fraction: float = Field(0.7, gt=0, le=1)
    updates: int = Field(20, ge=1)
    epochs: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _gradual_importance(self) -> PruneChannelsStep:
        if self.gradual and self.importance == "taylor":
            raise ValueError("importance 'taylor' ranks once, from data: use it with "
                             "gradual: false (gradual masks re-rank with l1, l2 or bn)")
        return self


class FactorizeStep(_Strict):
    """Low-rank factorization (`kmot.decomposition.factorize`), then fine-tuning.

    At most one of ``rank``, ``energy`` and ``compression``; none: kept energy 0.9.
    """

    kind: Literal["factorize"] = "factorize"
    rank: int | None = Field(None, ge=1)
    energy: float | None = Field(None, gt=0, le=1)
    compression: float | None = Field(None, ge=1)
    method: Literal["auto", "svd", "tucker", "spatial"] = "auto"
    epochs: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_budget(self) -> FactorizeStep:
        given = [k for k in ("rank", "energy", "compression") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of rank, energy and compression, not {given}")
        return self


class ClusterStep(_Strict):
    kind: Literal["cluster"] = "cluster"
    number_of_clusters: int = Field(16, ge=2)
    init: Literal["kmeans++", "linear", "density", "random"] = "kmeans++"
    preserve_sparsity: bool = False
    per_channel: bool = False
    epochs: int | None = Field(None, ge=1)


class QuantizeStep(_Strict):
    kind: Literal["quantize"] = "quantize"
    scheme: Literal["int8", "int16x8"] = "int8"
    preserve_sparsity: bool = False
    preserve_clusters: bool = False
    epochs: int | None = Field(None, ge=1)


class DistillStep(_Strict):
    kind: Literal["distill"] = "distill"
    teacher: str = "baseline"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    epochs: int | None = Field(None, ge=1)


Step = Annotated[Union[PruneStep, PruneChannelsStep, FactorizeStep, ClusterStep, QuantizeStep,
                       DistillStep],
                 Field(discriminator="kind")]


class Export(_Strict):
    quantize: Literal["float32", "float16", "dynamic", "int8", "int16x8"] | None = None
    calibration_samples: int = Field(200, ge=1)
    # int8 / int16x8: layers left in float32 (selective quantization, see quantization_error)
    keep_float: list[str] = Field(default_factory=list)


class Evaluate(_Strict):
    runs: int = Field(50, ge=1)
    warmup: int = Field(5, ge=0)
    memory: bool = True


class Register(_Strict):
    name: str = Field(min_length=1)
    promote: bool = False

    @field_validator("name")
    @classmethod
    def _registry_name(cls, name: str) -> str:
        """Checked here, not at push time: a run must not fine-tune, then fail on it."""
        from kmot.registry.validate import check_name

        return check_name(name)


class Recipe(_Strict):
    name: str = Field(min_length=1)
    seed: int = 0
    training: Training = Training()
    steps: list[Step] = Field(default_factory=list)
    export: Export = Export()
    evaluate: Evaluate | None = Evaluate()
    gate: dict[str, Any] | None = None
    registry: Register | None = Field(None, alias="register")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("gate")
    @classmethod
    def _budgets(cls, gate: dict[str, Any] | None) -> dict[str, Any] | None:
        """Parsed by the gate's own parser before any step runs (see `load_budgets`)."""
        if gate:  # an empty gate is no gate (see `optimize`)
            from kmot.evaluate.budgets import load_budgets

            load_budgets(gate)
        return gate

    @model_validator(mode="before")
    @classmethod
    def _step_kinds(cls, data: Any) -> Any:
        """Steps are written ``- prune: {...}``: one key naming the kind."""
        if isinstance(data, dict) and isinstance(data.get("steps"), list):
            steps = []
            for i, step in enumerate(data["steps"]):
                if isinstance(step, str):
                    step = {step: {}}
                if not isinstance(step, dict) or len(step) != 1:
                    raise ValueError(
                        f"steps[{i}] must be one mapping like `- prune: {{final_sparsity: 0.8}}`; "
                        f"received {step!r}")
                (kind, options), = step.items()
                if kind not in STEP_KINDS:
                    raise ValueError(
                        f"steps[{i}] has unknown kind {kind!r}; expected one of "
                        + ", ".join(STEP_KINDS))
                steps.append({"kind": kind, **(options or {})})
            data = {**data, "steps": steps}
        return data


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(p) for p in error["loc"]) or "recipe"


def load_recipe(recipe: str | os.PathLike | dict[str, Any]) -> Recipe:
    """Loads and validates a recipe (a YAML path or a dict).

    Raises:
        RecipeError: naming the field (``steps.1.number_of_clusters``), what it
            expects and what it received.

    Example:
        >>> load_recipe({"name": "r", "steps": [{"prune": {"final_sparsity": 0.5}}]}).steps[0].kind
        'prune'
    """
    if isinstance(recipe, (str, os.PathLike)):
        path = Path(recipe)
        if not path.is_file():
            raise RecipeError(f"No such recipe file. Expected a YAML file. Received: {path}")
        import yaml

        from kmot import _yaml

        try:
            data = _yaml.load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise RecipeError(
                f"Recipe {path.name} is not valid YAML. Expected UTF-8 text with each key "
                f"once per mapping. Received: {_yaml.describe(err)}") from None
    else:
        data = recipe
    if not isinstance(data, dict):
        raise RecipeError(f"A recipe is a mapping with at least `name`. Received: {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        lines = [f"{_where(e)}: {e['msg']} (received {e.get('input')!r})" for e in err.errors()]
        raise RecipeError(
            "Recipe is invalid. Fix these fields:\n  " + "\n  ".join(lines)
            + "\nReceived: the recipe above"
        ) from None
