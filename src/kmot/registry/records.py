"""What the registry returns: a model version, a registered model, a production change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ModelVersion", "Promotion", "RegisteredModel"]


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
