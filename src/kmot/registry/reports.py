"""Reports attached to a pushed version, and the flat metrics summary drawn from them.

A report is either a ``report.json`` written by `kmot.evaluate` (one entry per
candidate) or any JSON object of the user's own, such as ``{"accuracy": 0.97}``.
Only the JSON is read here: `kmot.evaluate` (and its dependencies) are not imported.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from kmot.errors import RegistryError

__all__ = ["load_report", "summarize"]


def load_report(report: str | os.PathLike | dict[str, Any] | None) -> dict[str, Any] | None:
    """The report as a JSON-ready dict, from a path to a JSON file or a dict.

    Raises:
        RegistryError: the file is missing or is not a JSON object, or the dict does not
            serialize to JSON.
    """
    if report is None:
        return None
    if isinstance(report, dict):
        try:
            return json.loads(json.dumps(report))
        except (TypeError, ValueError) as err:
            raise RegistryError(
                f"Expected `report=` to be a JSON-serializable dict (str keys; numbers, "
                f"strings, lists, dicts). Convert other values (e.g. NumPy scalars with "
                f"`float(x)`) first. Received: {err}") from None
    if not isinstance(report, (str, os.PathLike)):
        raise RegistryError(
            f"Expected `report=` to be a path to a report.json file or a dict of metrics. "
            f"Received: report={type(report).__name__}")
    path = Path(report)
    if path.is_dir() and (path / "report.json").is_file():
        path = path / "report.json"
    if not path.is_file():
        raise RegistryError(
            f"No such report file. Expected a JSON file such as the report.json that "
            f"`kmot bench` or `Report.save` writes; check the path. "
            f"Received: report={str(report)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegistryError(
            f"The report file is not valid JSON. Expected a JSON object such as a "
            f"report.json from `kmot bench`; regenerate it. Received: {path} ({err})") from None
    if not isinstance(data, dict):
        raise RegistryError(
            f"Expected the report file to hold a JSON object (a report.json or a dict of "
            f"metrics). Received: a JSON {type(data).__name__} in {path}")
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _candidate(report: dict[str, Any], source: str, size_bytes: int) -> dict[str, Any] | None:
    """The candidate of a kmot report that the pushed artifact is."""
    candidates = [c for c in report.get("candidates", []) if isinstance(c, dict)]
    by_source = [c for c in candidates if c.get("source") and Path(c["source"]).name == source]
    if len(by_source) == 1:
        return by_source[0]
    others = [c for c in candidates if c.get("name") != report.get("baseline")]
    if len(others) == 1:
        return others[0]
    by_size = [c for c in others if (c.get("size") or {}).get("bytes") == size_bytes]
    return by_size[0] if len(by_size) == 1 else None


def summarize(report: dict[str, Any] | None, *, source: str, size_bytes: int) -> dict[str, float]:
    """A flat ``{metric: number}`` summary of a report for listings and comparisons.

    For a `kmot.evaluate` report, the candidate that is the pushed file (same file
    name, else the only non-baseline candidate, else the one of the same size) gives
    its task metrics, their deltas to the baseline (``<metric>_delta``), ``p50_ms``,
    ``p90_ms``, ``gzip_bytes`` and ``argmax_agreement``. For any other JSON object,
    its top-level finite numbers are the summary.

    Returns:
        The summary; empty when there is no report or nothing numeric to draw from it.
    """
    if not report:
        return {}
    if not isinstance(report.get("candidates"), list):
        return {k: v for k, raw in report.items() if (v := _number(raw)) is not None}
    chosen = _candidate(report, source, size_bytes)
    if chosen is None:
        return {}
    values: dict[str, Any] = {}
    values.update(chosen.get("metrics") or {})
    values.update({f"{k}_delta": v for k, v in (chosen.get("metric_deltas") or {}).items()})
    latency = chosen.get("latency") or {}
    values.update(p50_ms=latency.get("p50_ms"), p90_ms=latency.get("p90_ms"),
                  gzip_bytes=(chosen.get("size") or {}).get("gzip_bytes"),
                  argmax_agreement=(chosen.get("fidelity") or {}).get("argmax_agreement"))
    return {k: v for k, raw in values.items() if (v := _number(raw)) is not None}
