"""`gate`: check a report against budgets; every check keeps its value and limit."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from kmot.errors import BudgetError
from kmot.evaluate.budgets import Budgets, BudgetsLike, load_budgets
from kmot.evaluate.report import Report
from kmot.evaluate.schema import CandidateResult

__all__ = ["Check", "GateResult", "gate"]


@dataclass(frozen=True)
class Check:
    """One budget checked on one candidate.

    `value` is None when the report lacks the measurement; the check then fails
    and `detail` says why.
    """

    budget: str
    candidate: str
    value: float | None
    limit: float
    passed: bool
    detail: str
    unit: str = ""


@dataclass(frozen=True)
class GateResult:
    """Every check of a gate; `passed` when all of them pass."""

    checks: list[Check]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    def table(self) -> Any:
        """A rich Table: one row per check, failures in red."""
        from rich.table import Table
        from rich.text import Text

        # Styles as Text, never markup: candidate names come from report files.
        verdict = ("PASSED", "green") if self.passed else ("FAILED", "red")
        table = Table(title=Text.assemble(
            "gate ", verdict, f": {len(self.checks) - len(self.failures)} of "
                              f"{len(self.checks)} checks pass"))
        for col in ("candidate", "budget", "value", "limit", "verdict"):
            table.add_column(col, justify="right" if col in ("value", "limit") else "left")
        for c in self.checks:
            value = "not measured" if c.value is None else _fmt(c.value, c.unit)
            table.add_row(Text(c.candidate), Text(c.budget), value, _fmt(c.limit, c.unit),
                          Text("pass", "green") if c.passed else Text("FAIL", "bold red"))
        return table


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.0f}{unit}" if unit == " bytes" else f"{value:.4g}{unit}"


# budget -> (reads, unit, is an upper limit)
_READS = {
    "max_accuracy_drop": ("drop of {metric} vs the baseline", "", True),
    "max_accuracy_drop_ci": ("accuracy drop at the worst end of its 95% interval", "", True),
    "min_accuracy": ("{metric}", "", False),
    "max_p50_ms": ("p50 latency", " ms", True),
    "max_p90_ms": ("p90 latency", " ms", True),
    "max_p99_ms": ("p99 latency", " ms", True),
    "max_latency_ratio": ("p50 / baseline p50", "x", True),
    "max_bytes": ("file size", " bytes", True),
    "max_gzip_bytes": ("gzip size", " bytes", True),
    "max_peak_memory_mb": ("net peak memory", " MB", True),
    "min_argmax_agreement": ("argmax agreement with the baseline", "", False),
    "max_kl_divergence": ("KL(baseline || candidate)", "", True),
}


def _value(budget: str, c: CandidateResult, report: Report,
           metric: str) -> tuple[float | None, str]:
    """The measured value a budget reads, or None and the reason it is missing."""
    is_base = c.name == report.baseline
    if budget in ("max_accuracy_drop", "min_accuracy"):
        if metric not in c.metrics:
            return None, (f"metric {metric!r} not in the report (it has "
                          f"{sorted(c.metrics) or 'none: no labels were given'})")
        if budget == "min_accuracy":
            return c.metrics[metric], ""
        delta = c.metric_deltas.get(metric, 0.0)
        info = report.metric_info(metric)
        # 0.0 - delta, not -delta: an unchanged metric reads 0, not -0.
        return (0.0 - delta if info is None or info.higher_is_better else delta), ""
    if budget == "max_accuracy_drop_ci":
        if is_base:
            return 0.0, ""
        profile = c.error_profile
        if profile is None or profile.delta_ci95 is None:
            return None, ("no error profile in the report (it needs class labels and a "
                          "classifier's outputs; evaluate with labels)")
        return 0.0 - profile.delta_ci95[0], ""
    if budget.startswith("max_p"):
        if budget == "max_peak_memory_mb":
            if c.memory is None:
                failed = [n for n in c.notes if n.startswith("peak memory not measured")]
                return None, failed[0] if failed else (
                    "peak memory not measured (run compare with memory=True, or kmot bench "
                    "without --no-memory)")
            return c.memory.net_mb, ""
        return getattr(c.latency, budget[4:]), ""
    if budget == "max_latency_ratio":
        return c.latency_ratio, ""
    if budget in ("max_bytes", "max_gzip_bytes"):
        return float(c.size.bytes if budget == "max_bytes" else c.size.gzip_bytes), ""
    if is_base:  # fidelity of the baseline to itself is exact
        return (1.0 if budget == "min_argmax_agreement" else 0.0), ""
    field = "argmax_agreement" if budget == "min_argmax_agreement" else "kl_divergence"
    value = getattr(c.fidelity, field, None) if c.fidelity else None
    return value, "" if value is not None else "not defined for a single-unit output"


def gate(
    report: Report | str | os.PathLike,
    budgets: BudgetsLike,
    *,
    candidate: str | None = None,
) -> GateResult:
    """Checks candidates of a report against budgets.

    Args:
        report: a `Report`, or the path of a report.json (or its folder).
        budgets: a dict, a `Budgets`, or a YAML/JSON file (see `Budgets`).
        candidate: check only this candidate. Default: every candidate but the
            baseline (the baseline itself when it is the only one).

    Returns:
        A `GateResult` listing every check (budget, candidate, value, limit, verdict).

    Raises:
        BudgetError: invalid budgets, an unknown candidate, or `min_accuracy` on
            a lower-is-better metric.
        ReportError: the report file is missing or invalid.

    Example:
        >>> result = gate(report, {"max_accuracy_drop": 0.01, "max_p90_ms": 5})  # doctest: +SKIP
        >>> result.passed, [c.budget for c in result.failures]                    # doctest: +SKIP
    """
    if not isinstance(report, Report):
        report = Report.load(report)
    limits: Budgets = load_budgets(budgets)
    info = report.metric_info(limits.metric)
    if limits.min_accuracy is not None and info is not None and not info.higher_is_better:
        raise BudgetError(
            f"min_accuracy needs a higher-is-better metric. Received: metric="
            f"{limits.metric!r}, which is lower-is-better. Use max_accuracy_drop, or set "
            "metric to an accuracy."
        )
    if candidate is not None:
        if candidate not in report.names:
            raise BudgetError(
                f"Expected candidate to name one in the report: {report.names}. "
                f"Received: candidate={candidate!r}"
            )
        chosen = [report.candidate(candidate)]
    else:
        chosen = [c for c in report.candidates if c.name != report.baseline] or report.candidates
    checks = []
    for c in chosen:
        for budget, limit in limits.limits().items():
            value, missing = _value(budget, c, report, limits.metric)
            reads, unit, upper = _READS[budget]
            reads = reads.format(metric=limits.metric)
            if value is None:
                checks.append(Check(budget, c.name, None, limit, False, f"{reads}: {missing}",
                                    unit))
                continue
            # Float noise (0.95 - 0.94 > 0.01) must not fail a budget met exactly.
            slack = 1e-9 * max(1.0, abs(limit))
            passed = value <= limit + slack if upper else value >= limit - slack
            sign = ("<=" if upper else ">=") if passed else (">" if upper else "<")
            checks.append(Check(budget, c.name, float(value), float(limit), passed,
                                f"{reads} {_fmt(value, unit)} {sign} {_fmt(limit, unit)}", unit))
    return GateResult(checks)
