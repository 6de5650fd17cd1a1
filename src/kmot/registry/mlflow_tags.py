"""kmot's records as MLflow tags, written and read back (checked as the folder's index is).

A version's fields are model-version tags (``kmot.sha256``, ``kmot.size_bytes``,
``kmot.source``, ``kmot.created_at``, and ``kmot.metrics``, ``kmot.metadata``,
``kmot.tags`` as JSON); ``kmot.report`` says the run holds the report at `REPORT`.
Each promote or rollback is a registered-model tag ``kmot.event.<6 digits>`` holding
``{"action", "version", "previous", "at"}``; the production stack is their replay.
Anyone allowed to write the server's tags can change them, so every value read
back is checked before it is used (a `RegistryError` names the tag otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kmot.errors import RegistryError
from kmot.registry.records import ModelVersion, Promotion
from kmot.registry.validate import StoredRow, check_stored_version

__all__ = ["EVENT_TAG", "MODEL_TAG", "PRODUCTION", "REPORT", "REPORT_TAG", "decode_events",
           "decode_version", "event_tag", "production_of", "replay", "version_tags"]

PRODUCTION = "production"            # the registered model's alias
MODEL_TAG = "kmot.registry"          # marks the registered models kmot pushed to
EVENT_TAG = "kmot.event."            # + a 6-digit sequence number
REPORT_TAG = "kmot.report"
REPORT = "kmot/report.json"          # the report, among the run's artifacts


def version_tags(sha256: str, size: int, source: str, created: str, has_report: bool,
                 metrics: dict[str, float], metadata: dict[str, Any],
                 tags: tuple[str, ...]) -> dict[str, str]:
    """The model-version tags that record a pushed version."""
    values = {"kmot.sha256": sha256, "kmot.size_bytes": str(size), "kmot.source": source,
              "kmot.created_at": created, "kmot.metrics": json.dumps(metrics),
              "kmot.metadata": json.dumps(metadata), "kmot.tags": json.dumps(list(tags))}
    if has_report:
        values[REPORT_TAG] = REPORT
    return values


def decode_version(mv: Any, production: int | None, report: str | None, *,
                   root: str) -> ModelVersion:
    """A `ModelVersion` from an MLflow model version and its report's JSON text.

    Raises:
        RegistryError: a tag holds a value kmot never writes.
    """
    tags = mv.tags or {}
    size = tags.get("kmot.size_bytes")
    label = StoredRow(
        f"model version {mv.name} v{mv.version}", store=f"The MLflow server at {root}",
        remedy="Its kmot.* tags were changed outside kmot: nothing was read from or written "
               "to a path built from them. Restore the tag, or push a trusted copy as a new "
               "version.")
    fields = check_stored_version({
        "name": mv.name, "version": int(mv.version), "sha256": tags.get("kmot.sha256"),
        "size_bytes": int(size) if isinstance(size, str) and size.isdigit() else size,
        "created_at": tags.get("kmot.created_at"), "source": tags.get("kmot.source"),
        "report": report, "metrics": tags.get("kmot.metrics"),
        "metadata": tags.get("kmot.metadata"), "tags": tags.get("kmot.tags"),
    }, label=label)
    return ModelVersion(**fields, production=fields["version"] == production)


def production_of(model: Any) -> int | None:
    """The version the registered model's `PRODUCTION` alias points at, if any."""
    version = (getattr(model, "aliases", None) or {}).get(PRODUCTION)
    return int(version) if version is not None else None


def event_tag(seq: int, action: str, version: int, previous: int | None,
              at: str) -> tuple[str, str]:
    """The registered-model tag (key, value) that records one promote or rollback."""
    return f"{EVENT_TAG}{seq:06d}", json.dumps(
        {"action": action, "version": version, "previous": previous, "at": at})


def decode_events(model: Any, *, root: str) -> list[tuple[int, Promotion]]:
    """The registered model's production events with their numbers, in order.

    Raises:
        RegistryError: an event tag holds a value kmot never writes.
    """
    events = [_event(root, model.name, key, text) for key, text in (model.tags or {}).items()
              if key.startswith(EVENT_TAG)]
    return sorted(events, key=lambda e: e[0])


def _event(root: str, name: str, key: str, text: str) -> tuple[int, Promotion]:
    try:
        data = json.loads(text)
        seq = int(key[len(EVENT_TAG):])
        action, version, previous, at = (data["action"], data["version"], data["previous"],
                                         data["at"])
        ok = (action in ("promote", "rollback") and _is_version(version) and isinstance(at, str)
              and (previous is None or _is_version(previous)))
    except (TypeError, ValueError, KeyError):
        ok = False
    if not ok:
        raise RegistryError(
            f"The MLflow server at {root} holds a value kmot never writes: registered model "
            f"{name!r} has tag {key}={text!r}; expected a JSON object with action ('promote' "
            f"or 'rollback'), version, previous and at. The production history was changed "
            f"outside kmot; restore that tag or delete it. Received: {key}={text!r}")
    return seq, Promotion(name, action, version, previous, at)


def _is_version(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def replay(events: Iterable[Promotion]) -> list[int]:
    """The production stack after ``events``: a promote pushes, a rollback pops."""
    stack: list[int] = []
    for event in events:
        if event.action == "promote":
            stack.append(event.version)
        elif stack:
            stack.pop()
    return stack
