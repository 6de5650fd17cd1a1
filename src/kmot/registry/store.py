"""`Registry`: versioned, checksummed model artifacts with a production pointer and rollback.

On disk, a registry is a folder::

    root/index.sqlite                       versions, production stacks, events
    root/objects/<sha256[:2]>/<sha256>      artifacts, stored once per content

Versions of a name are numbered 1, 2, 3, ... in push order. The production version
of a name is the top of a stack: `promote` pushes onto it, `rollback` pops it, so
the previous production version is current again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmot.errors import RegistryError
from kmot.registry import index
from kmot.registry.objects import ObjectStore, copy_atomically
from kmot.registry.records import ModelVersion, Promotion, RegisteredModel
from kmot.registry.reports import load_report, summarize
from kmot.registry.validate import (
    check_artifact,
    check_metadata,
    check_name,
    check_tags,
    check_version,
)

__all__ = ["ENV_VAR", "Registry", "default_root"]

ENV_VAR = "KMOT_REGISTRY"


def default_root() -> Path:
    """The registry folder used when none is given: ``$KMOT_REGISTRY`` or ``~/.kmot/registry``.

    Example:
        >>> default_root()                         # doctest: +SKIP
        PosixPath('/home/me/.kmot/registry')
    """
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".kmot" / "registry"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """A model registry in a local folder: push, list, show, promote, rollback, pull.

    Safe for several processes at once: pushes to the same name get distinct
    versions and none is lost; promote and rollback are single transactions.

    Args:
        root: the registry folder (created on the first push). Default:
            `default_root()`, i.e. ``$KMOT_REGISTRY`` or ``~/.kmot/registry``.

    Example:
        >>> registry = Registry("registry")                              # doctest: +SKIP
        >>> v = registry.push("model.tflite", name="digits",
        ...                   report="report/report.json")              # doctest: +SKIP
        >>> registry.promote("digits", v.version)                        # doctest: +SKIP
        >>> registry.pull("digits", dest="deploy/model.tflite")          # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(
                f"Expected the registry root to be a folder (or not to exist yet). Pass another "
                f"`root=`. Received: {self.root} is a file")
        self.objects = ObjectStore(self.root / "objects")

    def __repr__(self) -> str:
        return f"Registry(root={str(self.root)!r})"

    @property
    def index_path(self) -> Path:
        """The SQLite index file."""
        return self.root / "index.sqlite"

    def _read(self):
        return index.connect(self.index_path, write=False)

    def _write(self):
        self.root.mkdir(parents=True, exist_ok=True)
        return index.connect(self.index_path, write=True)

    # -- writing ------------------------------------------------------------------

    def push(
        self,
        artifact_path: str | os.PathLike,
        *,
        name: str,
        report: str | os.PathLike | dict[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
    ) -> ModelVersion:
        """Stores an artifact as the next version of ``name``.

        The file is copied into the content-addressed object folder (identical
        content is stored once) and hashed as it is copied; the version row is then
        added in one transaction, so concurrent pushes get distinct versions.

        Args:
            artifact_path: the file to store (e.g. a ``.tflite``).
            name: the model name (letters, digits, ``.``, ``_``, ``-``).
            report: a ``report.json`` path (or the folder holding one) or a dict of
                metrics; kept with the version, and summarized into ``metrics``.
            metadata: any JSON-serializable dict (git commit, dataset, ...).
            tags: free-form labels.

        Returns:
            The new `ModelVersion`.

        Raises:
            RegistryError: bad name, missing or empty artifact, unreadable report, or
                metadata that is not JSON.

        Example:
            >>> Registry("registry").push("model.tflite", name="digits",
            ...                           report={"accuracy": 0.97})  # doctest: +SKIP
        """
        name = check_name(name)
        artifact = check_artifact(artifact_path)
        report_data = load_report(report)
        meta = check_metadata(metadata)
        tag_list = check_tags(tags)
        sha256, size = self.objects.put(artifact)
        metrics = summarize(report_data, source=artifact.name, size_bytes=size)
        created = _now()
        with self._write() as conn:
            version = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?", (name,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, sha256, size, created, artifact.name,
                 None if report_data is None else json.dumps(report_data),
                 json.dumps(metrics), json.dumps(meta), json.dumps(list(tag_list))))
            production = index.production_version(conn, name)
        return ModelVersion(name, version, sha256, size, created, artifact.name, report_data,
                            metrics, meta, tag_list, production == version)

    def promote(self, name: str, version: int) -> ModelVersion:
        """Makes ``version`` the production version of ``name``.

        The previous production version stays on the production stack, so that
        `rollback` can return to it. Promoting the current production version again
        changes nothing.

        Returns:
            The promoted `ModelVersion` (``production=True``).

        Raises:
            RegistryError: unknown name or version.

        Example:
            >>> Registry("registry").promote("digits", 3)   # doctest: +SKIP
        """
        name, version = check_name(name), check_version(version)
        with self._write() as conn:
            row = index.version_row(conn, self.root, name, version)
            previous = index.production_version(conn, name)
            if previous != version:
                at = _now()
                conn.execute(
                    "INSERT INTO production SELECT ?, COALESCE(MAX(position), 0) + 1, ?, ? "
                    "FROM production WHERE name = ?", (name, version, at, name))
                conn.execute("INSERT INTO events (name, action, version, previous, at) "
                             "VALUES (?, 'promote', ?, ?, ?)", (name, version, previous, at))
        return index.to_model_version(row, production=version)

    def rollback(self, name: str) -> ModelVersion:
        """Makes the previous production version of ``name`` current again, atomically.

        Production versions form a stack: each `promote` pushes, each rollback pops.
        After promoting 1, 2, 3, rollbacks return to 2, then 1.

        Returns:
            The `ModelVersion` that is production now.

        Raises:
            RegistryError: unknown name, or no earlier production version to return to.

        Example:
            >>> Registry("registry").rollback("digits")   # doctest: +SKIP
        """
        name = check_name(name)
        with self._write() as conn:
            index.latest_version(conn, self.root, name)
            stack = [r["version"] for r in conn.execute(
                "SELECT version FROM production WHERE name = ? ORDER BY position DESC LIMIT 2",
                (name,))]
            if len(stack) < 2:
                current = f"v{stack[0]} is the only version ever promoted" if stack else \
                    "no version was ever promoted"
                raise RegistryError(
                    f"Nothing to roll back to for {name!r}: {current}. Expected an earlier "
                    f"production version; promote the version you want with "
                    f"`promote({name!r}, VERSION)`. Received: name={name!r}")
            conn.execute(
                "DELETE FROM production WHERE name = ? AND position = "
                "(SELECT MAX(position) FROM production WHERE name = ?)", (name, name))
            conn.execute("INSERT INTO events (name, action, version, previous, at) "
                         "VALUES (?, 'rollback', ?, ?, ?)", (name, stack[1], stack[0], _now()))
            row = index.version_row(conn, self.root, name, stack[1])
        return index.to_model_version(row, production=stack[1])

    # -- reading ------------------------------------------------------------------

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every version of ``name`` (or of every model), oldest first.

        Raises:
            RegistryError: ``name`` is given and has no versions.

        Example:
            >>> [v.version for v in Registry("registry").list("digits")]   # doctest: +SKIP
            [1, 2, 3]
        """
        with self._read() as conn:
            if name is not None:
                index.latest_version(conn, self.root, check_name(name))
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
        """Every model name with its number of versions, latest and production version.

        Example:
            >>> models = Registry("registry").models()                 # doctest: +SKIP
            >>> [(m.name, m.production_version) for m in models]        # doctest: +SKIP
            [('digits', 2)]
        """
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT name, COUNT(*) AS n, MAX(version) AS latest, MAX(created_at) AS updated "
                "FROM versions GROUP BY name ORDER BY name").fetchall()
            tops = index.production_versions(conn)
        return [RegisteredModel(r["name"], r["n"], r["latest"], tops.get(r["name"]), r["updated"])
                for r in rows]

    def show(self, name: str, version: int | None = None) -> ModelVersion:
        """One version of ``name``; by default the production version, else the latest.

        Raises:
            RegistryError: unknown name or version.

        Example:
            >>> Registry("registry").show("digits").metrics   # doctest: +SKIP
            {'accuracy': 0.97, 'accuracy_delta': -0.004, 'p50_ms': 0.05, ...}
        """
        name = check_name(name)
        version = None if version is None else check_version(version)
        with self._read() as conn:
            if version is None:
                version = (index.production_version(conn, name)
                           or index.latest_version(conn, self.root, name))
            row = index.version_row(conn, self.root, name, version)
            production = index.production_version(conn, name)
        return index.to_model_version(row, production=production)

    def current(self, name: str) -> ModelVersion | None:
        """The production version of ``name``, or ``None`` if none was ever promoted.

        Raises:
            RegistryError: unknown name.

        Example:
            >>> Registry("registry").current("digits").version   # doctest: +SKIP
            2
        """
        name = check_name(name)
        with self._read() as conn:
            index.latest_version(conn, self.root, name)
            production = index.production_version(conn, name)
            if production is None:
                return None
            row = index.version_row(conn, self.root, name, production)
        return index.to_model_version(row, production=production)

    def history(self, name: str) -> list[Promotion]:
        """Every promote and rollback of ``name``, oldest first.

        Raises:
            RegistryError: unknown name.
        """
        name = check_name(name)
        with self._read() as conn:
            index.latest_version(conn, self.root, name)
            rows = conn.execute("SELECT * FROM events WHERE name = ? ORDER BY id",
                                (name,)).fetchall()
        return [Promotion(r["name"], r["action"], r["version"], r["previous"], r["at"])
                for r in rows]

    def pull(self, name: str, version: int | None = None, *,
             dest: str | os.PathLike) -> Path:
        """Copies a version's artifact to ``dest`` after checking its sha256.

        The copy is hashed as it is written to a temporary file beside ``dest`` and
        renamed over ``dest`` only if the checksum matches, so ``dest`` is either the
        verified artifact or untouched.

        Args:
            name: the model name.
            version: which version; default the production version, else the latest.
            dest: the file to write, or an existing folder (the file is then named as
                the pushed file was). Missing parent folders are created.

        Returns:
            The path written.

        Raises:
            RegistryError: unknown name or version, or the stored object is missing or
                does not match its checksum.

        Example:
            >>> Registry("registry").pull("digits", dest="deploy/")   # doctest: +SKIP
            PosixPath('deploy/model.tflite')
        """
        chosen = self.show(name, version)
        target = Path(dest)
        if target.is_dir() or str(dest).endswith(("/", os.sep)):
            target = target / chosen.source
        obj = self.objects.path(chosen.sha256)
        fix = ("Restore it from a trusted copy of the artifact (pushing that file again "
               "rewrites the object) or pull another version")
        if not obj.is_file():
            raise RegistryError(
                f"The stored object of {chosen.label} is missing. Expected {obj} "
                f"(sha256 {chosen.sha256}). {fix}. Nothing was written. Received: missing file")
        target.parent.mkdir(parents=True, exist_ok=True)
        found, size = copy_atomically(obj, target, expected_sha256=chosen.sha256)
        if found != chosen.sha256:
            raise RegistryError(
                f"Checksum mismatch: the stored object of {chosen.label} is corrupted. "
                f"Expected sha256 {chosen.sha256} ({chosen.size_bytes} bytes). Received: sha256 "
                f"{found} ({size} bytes) in {obj}. {fix}. Nothing was written to {target}.")
        return target
