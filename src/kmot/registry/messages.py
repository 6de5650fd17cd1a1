"""The errors every registry backend raises alike, so a folder and a server read the same."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from kmot.errors import RegistryError

__all__ = ["now", "nothing_to_roll_back", "unknown_name", "unknown_version", "unreadable_artifact"]


def now() -> str:
    """The time a registry records: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def unknown_name(name: str, known: Sequence[str], where: object) -> RegistryError:
    """A model ``name`` that has no version; ``known`` lists (up to 20) names that do."""
    expected = f"one of {list(known)}" if known else "a pushed model (it has none yet)"
    return RegistryError(
        f"Unknown model name. Expected {expected} in the registry at {where}; push a "
        f"version first (`Registry.push(path, name={name!r})` or `kmot registry push FILE "
        f"--name {name}`), or check the registry root (`root=`, --root or $KMOT_REGISTRY). "
        f"Received: name={name!r}")


def unknown_version(name: str, version: int, latest: int) -> RegistryError:
    """A ``version`` of a known model that does not exist."""
    return RegistryError(
        f"Unknown version of {name!r}. Expected a version from 1 to {latest}; list them "
        f"with `Registry.list({name!r})` or `kmot registry list {name}`. "
        f"Received: version={version}")


def nothing_to_roll_back(name: str, stack: Sequence[int]) -> RegistryError:
    """A rollback of a model whose production stack holds fewer than two versions."""
    current = f"v{stack[-1]} is the only version ever promoted" if stack else \
        "no version was ever promoted"
    return RegistryError(
        f"Nothing to roll back to for {name!r}: {current}. Expected an earlier "
        f"production version; promote the version you want with "
        f"`promote({name!r}, VERSION)`. Received: name={name!r}")


def unreadable_artifact(err: OSError) -> RegistryError:
    """The file given to `push` exists but cannot be read."""
    return RegistryError(
        f"Cannot read the artifact. Expected a file this user can read; check "
        f"its permissions. Received: {err}")
