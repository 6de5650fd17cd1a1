"""The folder backend of `Registry`: a SQLite index and content-addressed objects on a local disk.

On disk, a registry is a folder::

    root/index.sqlite                       versions, production stacks, events
    root/objects/<sha256[:2]>/<sha256>      artifacts, stored once per content

The production version of a name is the top of a stack: `promote` pushes onto it,
`rollback` pops it, so the previous production version is current again.

A push stores the object first, then commits the version row that refers to it, so
a committed version always has its file; `gc` relies on that order (see
`kmot.registry.maintenance`). Every value read back from the index is checked as
it was on write (`kmot.registry.validate`): the index is a file, and a value kmot
never writes is refused before it reaches a path.

Arguments arrive checked by `Registry` (names, versions, the artifact, report,
metadata and tags); this module checks what it reads back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kmot._files import PART_SUFFIX
from kmot.errors import RegistryError
from kmot.registry import index
from kmot.registry.maintenance import collect_garbage, verify_objects
from kmot.registry.messages import nothing_to_roll_back, now, unreadable_artifact
from kmot.registry.objects import ObjectStore
from kmot.registry.records import (
    GcResult,
    ModelVersion,
    Promotion,
    RegisteredModel,
    VerifyResult,
)
from kmot.registry.reports import summarize

__all__ = ["FolderBackend"]

# A push whose files gc removes before its row is committed stores them again; only
# a gc with grace=0 running in a loop could make it do so more than once.
_PUT_ATTEMPTS = 3


class FolderBackend:
    """A registry in a local folder; safe for several processes at once.

    Args:
        root: the registry folder (created on the first push).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(
                f"Expected the registry root to be a folder (or not to exist yet). Pass another "
                f"`root=`. Received: {self.root} is a file")
        self.objects = ObjectStore(self.root / "objects")

    @property
    def index_path(self) -> Path:
        """The SQLite index file."""
        return self.root / "index.sqlite"

    def _read(self):
        return index.connect(self.index_path, write=False)

    def _write(self):
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise index.read_only_error(self.root, err) from None
        return index.connect(self.index_path, write=True)

    def _put(self, artifact: Path) -> tuple[str, int] | None:
        """Stores the artifact; None if gc removed the temporary copy before its rename."""
        try:
            return self.objects.put(artifact)
        except OSError as err:
            written = None if err.filename is None else Path(os.fspath(err.filename))
            if (isinstance(err, FileNotFoundError) and written is not None
                    and written.parent == self.objects.folder
                    and written.name.endswith(PART_SUFFIX)):
                return None
            if written is not None and os.fspath(written) == os.fspath(artifact):
                raise unreadable_artifact(err) from None
            raise index.read_only_error(self.root, err) from None

    # -- writing ------------------------------------------------------------------

    def push(self, artifact: Path, *, name: str, source: str, report: dict[str, Any] | None,
             metadata: dict[str, Any], tags: tuple[str, ...]) -> ModelVersion:
        if self.index_path.exists():
            # An index that is not SQLite, is from a newer kmot or may not be written is
            # refused here, before the copy, so the failed push leaves no object behind.
            with self._write():
                pass
        for _ in range(_PUT_ATTEMPTS):
            stored = self._put(artifact)
            if stored is None:
                continue
            sha256, size = stored
            metrics = summarize(report, source=source, size_bytes=size)
            created = now()
            with self._write() as conn:
                # gc deletes only while holding this lock: if it took our object after
                # the copy, store it again instead of recording a version without it.
                if not self.objects.path(sha256).is_file():
                    continue
                version = conn.execute(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?",
                    (name,)).fetchone()[0]
                conn.execute(
                    "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, version, sha256, size, created, source,
                     None if report is None else json.dumps(report),
                     json.dumps(metrics), json.dumps(metadata), json.dumps(list(tags))))
                production = index.production_version(conn, name)
            return ModelVersion(name, version, sha256, size, created, source, report,
                                metrics, metadata, tags, production == version)
        raise RegistryError(
            f"The stored copy of the artifact was removed {_PUT_ATTEMPTS} times before its "
            f"version could be recorded. Expected `gc` to keep recent files: while others "
            f"push, run it with the default grace period, not grace=0. Nothing was recorded. "
            f"Received: {artifact}")

    def promote(self, name: str, version: int) -> ModelVersion:
        with self._write() as conn:
            row = index.version_row(conn, self.root, name, version)
            previous = index.production_version(conn, name)
            if previous != version:
                at = now()
                conn.execute(
                    "INSERT INTO production SELECT ?, COALESCE(MAX(position), 0) + 1, ?, ? "
                    "FROM production WHERE name = ?", (name, version, at, name))
                conn.execute("INSERT INTO events (name, action, version, previous, at) "
                             "VALUES (?, 'promote', ?, ?, ?)", (name, version, previous, at))
        return index.to_model_version(row, production=version)

    def rollback(self, name: str) -> ModelVersion:
        with self._write() as conn:
            index.latest_version(conn, self.root, name)
            stack = [r["version"] for r in conn.execute(
                "SELECT version FROM production WHERE name = ? ORDER BY position DESC LIMIT 2",
                (name,))]
            if len(stack) < 2:
                raise nothing_to_roll_back(name, stack[::-1])
            conn.execute(
                "DELETE FROM production WHERE name = ? AND position = "
                "(SELECT MAX(position) FROM production WHERE name = ?)", (name, name))
            conn.execute("INSERT INTO events (name, action, version, previous, at) "
                         "VALUES (?, 'rollback', ?, ?, ?)", (name, stack[1], stack[0], now()))
            row = index.version_row(conn, self.root, name, stack[1])
        return index.to_model_version(row, production=stack[1])

    # -- reading ------------------------------------------------------------------

    def list(self, name: str | None) -> list[ModelVersion]:
        with self._read() as conn:
            if name is not None:
                index.latest_version(conn, self.root, name)
            if conn is None:
                return []
            if name is not None:
                rows = conn.execute("SELECT * FROM versions WHERE name = ? ORDER BY version",
                                    (name,)).fetchall()
            else:
                rows = conn.execute("SELECT * FROM versions ORDER BY name, version").fetchall()
            tops = index.production_versions(conn)
        return [index.to_model_version(r, production=tops.get(r["name"])) for r in rows]

    def models(self) -> list[RegisteredModel]:
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT name, COUNT(*) AS n, MAX(version) AS latest, MAX(created_at) AS updated "
                "FROM versions GROUP BY name ORDER BY name").fetchall()
            tops = index.production_versions(conn)
        return [RegisteredModel(r["name"], r["n"], r["latest"], tops.get(r["name"]), r["updated"])
                for r in rows]

    def show(self, name: str, version: int | None) -> ModelVersion:
        with self._read() as conn:
            if version is None:
                version = (index.production_version(conn, name)
                           or index.latest_version(conn, self.root, name))
            row = index.version_row(conn, self.root, name, version)
            production = index.production_version(conn, name)
        return index.to_model_version(row, production=production)

    def current(self, name: str) -> ModelVersion | None:
        with self._read() as conn:
            index.latest_version(conn, self.root, name)
            production = index.production_version(conn, name)
            if production is None:
                return None
            row = index.version_row(conn, self.root, name, production)
        return index.to_model_version(row, production=production)

    def history(self, name: str) -> list[Promotion]:
        with self._read() as conn:
            index.latest_version(conn, self.root, name)
            rows = conn.execute("SELECT * FROM events WHERE name = ? ORDER BY id",
                                (name,)).fetchall()
        return [Promotion(r["name"], r["action"], r["version"], r["previous"], r["at"])
                for r in rows]

    def pull(self, chosen: ModelVersion, target: Path, *, dest: str | os.PathLike) -> None:
        obj = self.objects.path(chosen.sha256)
        fix = ("Restore it from a trusted copy of the artifact (pushing that file again "
               "rewrites the object) or pull another version")
        if not obj.is_file():
            raise RegistryError(
                f"The stored object of {chosen.label} is missing. Expected {obj} "
                f"(sha256 {chosen.sha256}). {fix}. Nothing was written. Received: missing file")
        found, size = self.objects.copy_out(chosen.sha256, target, dest=dest)
        if found != chosen.sha256:
            raise RegistryError(
                f"Checksum mismatch: the stored object of {chosen.label} is corrupted. "
                f"Expected sha256 {chosen.sha256} ({chosen.size_bytes} bytes). Received: "
                f"sha256 {found} ({size} bytes) in {obj}. {fix}. Nothing was written to "
                f"{target}.")

    # -- upkeep -------------------------------------------------------------------

    def gc(self, *, grace: float, dry_run: bool) -> GcResult:
        return collect_garbage(self.root, self.objects, grace=grace, dry_run=dry_run)

    def verify(self) -> VerifyResult:
        return verify_objects(self.root, self.objects)
