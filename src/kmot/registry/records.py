"""What the registry returns: versions, models, production changes, gc and verify results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GcResult", "ModelVersion", "Promotion", "RegisteredModel", "VerifyProblem",
           "VerifyResult"]


@dataclass(frozen=True)
class ModelVersion:
    """One pushed artifact of a model: its content checksum, report and metrics.

    ``production`` tells whether this version was the production version of its
    model when it was read; it is a snapshot, not a live view.

    Example:
        >>> v = Registry("registry").push("model.tflite", name="digits")  # doctest: +SKIP
        >>> v.name, v.version, v.sha256[:12], v.size_bytes                # doctest: +SKIP
        ('digits', 1, '3f2a9c...', 23816)
    """

    name: str
    version: int
    sha256: str
    size_bytes: int
    created_at: str
    source: str
    report: dict[str, Any] | None = field(default=None, hash=False, repr=False)
    metrics: dict[str, float] = field(default_factory=dict, hash=False)
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    tags: tuple[str, ...] = ()
    production: bool = False

    @property
    def label(self) -> str:
        """``name vN``, as the CLI and error messages print it."""
        return f"{self.name} v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``tags`` as a list)."""
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


@dataclass(frozen=True)
class RegisteredModel:
    """A model name in the registry: how many versions, the latest and the production one."""

    name: str
    num_versions: int
    latest_version: int
    production_version: int | None
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True)
class Promotion:
    """One change of a model's production version, by `promote` or `rollback`.

    ``action`` is ``"promote"`` or ``"rollback"``; ``version`` is the production
    version after the change and ``previous`` the one before it (``None`` for the
    first promotion of a model).
    """

    name: str
    action: str
    version: int
    previous: int | None
    at: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True)
class GcResult:
    """What `Registry.gc` removed (or, with ``dry_run``, would remove).

    ``removed_objects`` are the sha256 digests of stored files no version refers to;
    ``removed_partials`` the paths, relative to the registry root, of temporary files
    left by interrupted writes. ``kept_recent`` counts the files of either kind that
    were younger than the grace period and so were kept (a push may still need them).
    """

    removed_objects: tuple[str, ...]
    removed_partials: tuple[str, ...]
    freed_bytes: int
    kept_recent: int
    referenced_objects: int
    grace_s: float
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists)."""
        data = asdict(self)
        data["removed_objects"] = list(self.removed_objects)
        data["removed_partials"] = list(self.removed_partials)
        return data


@dataclass(frozen=True)
class VerifyProblem:
    """A stored object that does not hold what the index says it holds.

    ``problem`` is ``"missing"`` (no file), ``"unreadable"`` (no permission to read it)
    or ``"mismatch"`` (its sha256 or size differs from the one recorded at push);
    ``versions`` lists every version stored in it
    (``name vN``), and ``found_sha256`` / ``found_bytes`` describe the file found.
    """

    sha256: str
    size_bytes: int
    problem: str
    versions: tuple[str, ...]
    path: str
    found_sha256: str | None = None
    found_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``versions`` as a list)."""
        data = asdict(self)
        data["versions"] = list(self.versions)
        return data


@dataclass(frozen=True)
class VerifyResult:
    """What `Registry.verify` found: how much it checked, and every object that failed."""

    checked_objects: int
    checked_versions: int
    checked_bytes: int
    problems: tuple[VerifyProblem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every version's object is present and matches its sha256."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field, plus ``ok``."""
        return {"ok": self.ok, "checked_objects": self.checked_objects,
                "checked_versions": self.checked_versions, "checked_bytes": self.checked_bytes,
                "problems": [p.to_dict() for p in self.problems]}
