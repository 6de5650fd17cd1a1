"""Budgets: the limits a candidate must meet, from a dict or a YAML/JSON file.

```yaml
metric: accuracy           # which task metric the two accuracy budgets read
max_accuracy_drop: 0.01    # baseline minus candidate, absolute (0.01 = 1 point)
max_accuracy_drop_ci: 0.02 # the same at the worst end of its 95% bootstrap interval
min_accuracy: 0.95
max_p50_ms: 2.0            # also max_p90_ms, max_p99_ms
max_latency_ratio: 0.8     # candidate p50 / baseline p50
max_bytes: 500000          # also max_gzip_bytes
max_peak_memory_mb: 20     # net of an idle process
min_argmax_agreement: 0.99
max_kl_divergence: 0.01
```

Every key is optional, but at least one budget must be set. Values are numbers
(YAML ``1.0e6``, not ``1e6``, which YAML reads as a string).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kmot.errors import BudgetError
from kmot.evaluate.schema import error_location

__all__ = ["Budgets", "load_budgets", "BudgetsLike"]

_Positive = Annotated[float, Field(gt=0)]
_NonNegative = Annotated[float, Field(ge=0)]


class Budgets(BaseModel):
    """Limits for `gate`; unset budgets are not checked.

    Example:
        >>> Budgets(max_accuracy_drop=0.01, max_p90_ms=5).limits()
        {'max_accuracy_drop': 0.01, 'max_p90_ms': 5.0}
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    metric: str = Field("accuracy", description="the metric accuracy budgets apply to")
    max_accuracy_drop: _NonNegative | None = None
    max_accuracy_drop_ci: _NonNegative | None = None
    min_accuracy: float | None = None
    max_p50_ms: _Positive | None = None
    max_p90_ms: _Positive | None = None
    max_p99_ms: _Positive | None = None
    max_latency_ratio: _Positive | None = None
    max_bytes: Annotated[int, Field(gt=0)] | None = None
    max_gzip_bytes: Annotated[int, Field(gt=0)] | None = None
    max_peak_memory_mb: _Positive | None = None
    min_argmax_agreement: Annotated[float, Field(ge=0, le=1)] | None = None
    max_kl_divergence: _NonNegative | None = None

    def limits(self) -> dict[str, float]:
        """The budgets that are set, in declaration order."""
        return {k: v for k, v in self.model_dump().items() if k != "metric" and v is not None}


BudgetsLike = Budgets | Mapping[str, Any] | str | os.PathLike


def _valid_keys() -> str:
    return ", ".join(Budgets.model_fields)


def _explain(err: ValidationError, source: str) -> BudgetError:
    problems = []
    for e in err.errors():
        key = error_location(e)
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown budget {key!r} (expected one of: {_valid_keys()}); "
                            f"Received: {key}={e['input']!r}")
        else:
            problems.append(f"budget {key!r}: {e['msg'].lower()}; Received: "
                            f"{key}={e['input']!r}")
    return BudgetError(
        f"Invalid budgets in {source}: " + "; ".join(problems)
        + ". Fix or remove them; docs/evaluate.md lists every budget and its type."
    )


def load_budgets(budgets: BudgetsLike) -> Budgets:
    """Validated budgets from a `Budgets`, a dict, or a YAML (or JSON) file path.

    Args:
        budgets: the budgets; a str or path is read as a YAML file.

    Returns:
        A `Budgets` with at least one budget set.

    Raises:
        BudgetError: a missing or unparsable file, not a mapping, an unknown key,
            a wrong type or range, or no budget set at all.

    Example:
        >>> load_budgets({"max_p50_ms": 5}).max_p50_ms
        5.0
    """
    if isinstance(budgets, Budgets):
        result, source = budgets, "Budgets"
    else:
        if isinstance(budgets, (str, os.PathLike)):
            source = os.fspath(budgets)
            raw = _read_yaml(Path(budgets))
        elif isinstance(budgets, Mapping):
            source, raw = "the budgets dict", budgets
        else:
            raise BudgetError(
                "Expected budgets as a dict, a Budgets, or the path of a YAML file. "
                f"Received: {type(budgets).__name__}"
            )
        if not isinstance(raw, Mapping):
            raise BudgetError(
                f"Expected {source} to hold a mapping of budget names to limits, e.g. "
                f"'max_accuracy_drop: 0.01'. Received: {type(raw).__name__} {raw!r:.80}"
            )
        try:
            result = Budgets.model_validate(dict(raw))
        except ValidationError as err:
            raise _explain(err, source) from None
    if not result.limits():
        raise BudgetError(
            f"{source} sets no budget, so a gate could never fail. Expected at least one "
            f"of: {_valid_keys()}. Received: {result.model_dump(exclude_none=True)}"
        )
    return result


def _read_yaml(path: Path) -> Any:
    import yaml

    from kmot import _yaml

    if not path.is_file():
        raise BudgetError(f"No such budgets file. Expected a YAML file. Received: {path}")
    try:
        return _yaml.load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise BudgetError(
            f"Expected {path} to be valid YAML. Received: {_yaml.describe(err)}. Write one "
            "'name: number' per line."
        ) from None
