"""Checks of what callers hand the registry, and of what the index hands back.

Each check runs both ways: on write, for what a caller passes (`check_name`, ...),
and on read, for every version row taken from the index (`check_stored_version`),
because ``index.sqlite`` is a file anyone with access to the folder can edit. A
value kmot would never have written there (a ``source`` of ``../x``, a ``sha256``
that is not one) is refused with the row named, rather than used to build a path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from kmot.errors import RegistryError

__all__ = ["StoredRow", "check_artifact", "check_file_name", "check_metadata", "check_name",
           "check_sha256", "check_stored_version", "check_tags", "check_version"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME_BYTES = 255          # the longest file name of common filesystems (ext4, APFS, NTFS)


class StoredRow(str):
    """The label of a stored record that is not an index row, and what to say when it is wrong.

    A plain ``str`` label names a row of ``index.sqlite``; a `StoredRow` names a record
    another backend keeps (e.g. an MLflow model version's tags), so that the error
    says where the value was read and how to correct it.
    """

    store: str
    remedy: str

    def __new__(cls, label: str, *, store: str, remedy: str) -> StoredRow:
        row = super().__new__(cls, label)
        row.store, row.remedy = store, remedy
        return row


_INDEX_REMEDY = ("The index was modified outside kmot: nothing was read from or written to a "
                 "path built from it. Restore index.sqlite from a backup or correct that row.")


def _tampered(row: str, field: str, value: Any, expected: str) -> RegistryError:
    store = getattr(row, "store", "The registry index")
    remedy = getattr(row, "remedy", _INDEX_REMEDY)
    return RegistryError(
        f"{store} holds a value kmot never writes: {row} has {field}={value!r}; "
        f"expected {expected}. {remedy} Received: {field}={value!r}")


def check_name(name: Any, *, row: str | None = None) -> str:
    """The model name, if it is 1-128 safe characters (it appears in paths and commands).

    ``row`` names the index row the value was read from (on read only): the error then
    says that the index was modified outside kmot.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        expected = ("a model name of 1-128 letters, digits, '.', '_' or '-', starting with a "
                    "letter or digit")
        if row is not None:
            raise _tampered(row, "name", name, expected)
        raise RegistryError(f"Expected {expected} (e.g. 'digits-int8'). Received: name={name!r}")
    return name


def check_version(version: Any, *, row: str | None = None) -> int:
    """The version number, if it is an int >= 1 (a bool is refused)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        if row is not None:
            raise _tampered(row, "version", version, "an int >= 1")
        raise RegistryError(
            f"Expected a version number: an int >= 1, as `push` returned it. "
            f"Received: version={version!r}")
    return version


def _file_name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "it is empty or not text"
    if "\0" in name:
        return "it holds a NUL character"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if name in (".", ".."):
        return "it names a folder"
    if PurePosixPath(name).name != name or PureWindowsPath(name).name != name:
        return "it is a path, not a file name"       # e.g. "C:x" on Windows
    if len(name.encode("utf-8", "surrogateescape")) > _NAME_BYTES:
        return f"it is longer than {_NAME_BYTES} bytes"
    return None


def check_file_name(name: Any, *, row: str | None = None) -> str:
    """A bare file name: what `push` records as ``source`` and `pull` writes into a folder.

    Refuses anything that would leave the folder it is joined to: a path separator
    (``/`` or ``\\``), ``.`` or ``..``, a drive or root, a NUL, more than 255 bytes.
    """
    problem = _file_name_problem(name)
    if problem is not None:
        expected = ("a bare file name (no '/', '\\' or NUL, not '.' or '..', at most "
                    f"{_NAME_BYTES} bytes); {problem}")
        if row is not None:
            raise _tampered(row, "source", name, expected)
        raise RegistryError(
            f"Expected the artifact's file name to be {expected}: `pull` writes the file "
            f"under this name. Rename the file before pushing it. Received: source={name!r}")
    return name


def check_sha256(digest: Any, *, row: str) -> str:
    """A stored sha256 hex digest (64 lowercase hex digits), read from index ``row``.

    Only read back: on write the digest is the one kmot computed while copying.
    """
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise _tampered(row, "sha256", digest, "a sha256 digest of 64 lowercase hex digits")
    return digest


def _stored_json(row: str, field: str, text: Any, kind: type, *, nullable: bool = False) -> Any:
    """A JSON column decoded, if it holds what kmot writes there (a dict or a list)."""
    if nullable and text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise _tampered(row, field, text, "JSON as kmot writes it") from None
    if not isinstance(value, kind):
        what = {dict: "a JSON object", list: "a JSON list"}[kind]
        raise _tampered(row, field, text, f"null or {what}" if nullable else what)
    return value


def check_stored_version(row: Mapping[str, Any], *, label: str | None = None) -> dict[str, Any]:
    """The fields of a ``versions`` row read from the index, each checked as on write.

    ``label`` names where the row was read, for the error (default: the index row);
    another backend passes a `StoredRow` built from the same fields.

    Returns:
        The row's values with its JSON columns decoded (``tags`` as a tuple).

    Raises:
        RegistryError: a value kmot would not have written; the message names the row
            and says that the index was modified outside kmot.
    """
    if label is None:
        label = f"versions row (name={row['name']!r}, version={row['version']!r})"
    size = row["size_bytes"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise _tampered(label, "size_bytes", size, "an int >= 1")
    if not isinstance(row["created_at"], str):
        raise _tampered(label, "created_at", row["created_at"], "an ISO 8601 time")
    tags = _stored_json(label, "tags", row["tags"], list)
    if not all(isinstance(t, str) and t for t in tags):
        raise _tampered(label, "tags", row["tags"], "a JSON list of non-empty strings")
    return {
        "name": check_name(row["name"], row=label),
        "version": check_version(row["version"], row=label),
        "sha256": check_sha256(row["sha256"], row=label),
        "size_bytes": size,
        "created_at": row["created_at"],
        "source": check_file_name(row["source"], row=label),
        "report": _stored_json(label, "report", row["report"], dict, nullable=True),
        "metrics": _stored_json(label, "metrics", row["metrics"], dict),
        "metadata": _stored_json(label, "metadata", row["metadata"], dict),
        "tags": tuple(tags),
    }


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
