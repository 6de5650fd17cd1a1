"""Checks of what callers hand the registry: names, versions, artifacts, tags, metadata."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kmot.errors import RegistryError

__all__ = ["check_artifact", "check_metadata", "check_name", "check_tags", "check_version"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: Any) -> str:
    """The model name, if it is 1-128 safe characters (it appears in paths and commands)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(
            "Expected a model name of 1-128 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit (e.g. 'digits-int8'). Received: name={name!r}")
    return name


def check_version(version: Any) -> int:
    """The version number, if it is an int >= 1 (a bool is refused)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(
            f"Expected a version number: an int >= 1, as `push` returned it. "
            f"Received: version={version!r}")
    return version


def check_tags(tags: Any) -> tuple[str, ...]:
    """The tags as a tuple of non-empty strings, duplicates dropped, order kept."""
    items = None
    if not isinstance(tags, (str, bytes)):
        try:
            items = list(tags)
        except TypeError:
            pass
    if items is None or not all(isinstance(t, str) and t for t in items):
        raise RegistryError(
            f"Expected `tags=` to be a list of non-empty strings, e.g. tags=['int8']. "
            f"Received: tags={tags!r}")
    return tuple(dict.fromkeys(items))


def check_metadata(metadata: Any) -> dict[str, Any]:
    """A JSON round-tripped copy of the metadata dict (``{}`` for None)."""
    if metadata is None:
        return {}
    try:
        if not isinstance(metadata, Mapping):
            raise TypeError(type(metadata).__name__)
        return json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as err:
        raise RegistryError(
            f"Expected `metadata=` to be a JSON-serializable dict, e.g. "
            f"{{'git_sha': 'abc123'}}. Received: {err}") from None


def check_artifact(path: Any) -> Path:
    """The artifact path, if it names an existing, non-empty file."""
    if not isinstance(path, (str, os.PathLike)):
        raise RegistryError(
            f"Expected the artifact as a path to a file (e.g. 'model.tflite'). "
            f"Received: {type(path).__name__}")
    artifact = Path(path)
    if artifact.is_dir():
        raise RegistryError(
            f"Expected the artifact to be a file; the registry stores single files. Archive a "
            f"folder first (e.g. `tar czf model.tar.gz {artifact}`). Received: {artifact}")
    if not artifact.is_file():
        raise RegistryError(
            f"No such artifact file. Expected an existing file such as model.tflite; check "
            f"the path. Received: {artifact}")
    if artifact.stat().st_size == 0:
        raise RegistryError(
            f"Expected a non-empty artifact; an empty file is usually a failed export. "
            f"Re-create it. Received: {artifact} (0 bytes)")
    return artifact
