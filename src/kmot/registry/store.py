"""`Registry`: versioned, checksummed model artifacts with a production pointer and rollback.

On disk, a registry is a folder::

    root/index.sqlite                       versions, production stacks, events
    root/objects/<sha256[:2]>/<sha256>      artifacts, stored once per content

Versions of a name are numbered 1, 2, 3, ... in push order. The production version
of a name is the top of a stack: `promote` pushes onto it, `rollback` pops it, so
the previous production version is current again.

A push stores the object first, then commits the version row that refers to it, so
a committed version always has its file; `gc` relies on that order (see
`kmot.registry.maintenance`). Every value read back from the index is checked as
it was on write (`kmot.registry.validate`): the index is a file, and a value kmot
never writes is refused before it reaches a path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmot._files import PART_SUFFIX
from kmot.errors import RegistryError
from kmot.registry import index
from kmot.registry.maintenance import DEFAULT_GRACE_S, collect_garbage, verify_objects
from kmot.registry.objects import ObjectStore
from kmot.registry.records import (
    GcResult,
    ModelVersion,
    Promotion,
    RegisteredModel,
    VerifyResult,
)
from kmot.registry.reports import load_report, summarize
from kmot.registry.validate import (
    check_artifact,
    check_file_name,
    check_metadata,
    check_name,
    check_tags,
    check_version,
)

__all__ = ["ENV_VAR", "Registry", "default_root"]

ENV_VAR = "KMOT_REGISTRY"
# A push whose files gc removes before its row is committed stores them again; only
# a gc with grace=0 running in a loop could make it do so more than once.
_PUT_ATTEMPTS = 3


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
    """A model registry in a local folder: push, list, show, promote, rollback, pull, gc, verify.

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
                raise RegistryError(
                    f"Cannot read the artifact. Expected a file this user can read; check "
                    f"its permissions. Received: {err}") from None
            raise index.read_only_error(self.root, err) from None

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
        added in one transaction, so concurrent pushes get distinct versions. The
        row is committed only once its object is in place (a concurrent `gc` never
        leaves a version without its file).

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
            RegistryError: bad name, missing, empty or unreadable artifact, a file name
                `pull` could not write, unreadable report, metadata that is not JSON,
                or a registry folder this user cannot write to.

        Example:
            >>> Registry("registry").push("model.tflite", name="digits",
            ...                           report={"accuracy": 0.97})  # doctest: +SKIP
        """
        name = check_name(name)
        artifact = check_artifact(artifact_path)
        source = check_file_name(artifact.name)
        report_data = load_report(report)
        meta = check_metadata(metadata)
        tag_list = check_tags(tags)
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
            metrics = summarize(report_data, source=source, size_bytes=size)
            created = _now()
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
                     None if report_data is None else json.dumps(report_data),
                     json.dumps(metrics), json.dumps(meta), json.dumps(list(tag_list))))
                production = index.production_version(conn, name)
            return ModelVersion(name, version, sha256, size, created, source, report_data,
                                metrics, meta, tag_list, production == version)
        raise RegistryError(
            f"The stored copy of the artifact was removed {_PUT_ATTEMPTS} times before its "
            f"version could be recorded. Expected `gc` to keep recent files: while others "
            f"push, run it with the default grace period, not grace=0. Nothing was recorded. "
            f"Received: {artifact}")

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

    def gc(self, *, grace: float = DEFAULT_GRACE_S, dry_run: bool = False) -> GcResult:
        """Removes stored objects no version refers to, and files left by killed writes.

        Objects become unreferenced only when a push dies between storing its file
        and recording its version (or when the index is edited). Files younger than
        ``grace`` seconds are kept, since a push may still be writing or recording
        them, so gc is safe to run while others push.

        Args:
            grace: seconds; files last written more recently are kept (default 1 hour).
            dry_run: only report what would be removed (works on a read-only registry).

        Returns:
            A `GcResult`: the digests and partial files removed, and the bytes freed.

        Raises:
            RegistryError: a bad ``grace``, a registry this user cannot write to (unless
                ``dry_run``), or an index holding a row kmot never writes.

        Example:
            >>> Registry("registry").gc(grace=0, dry_run=True).removed_objects  # doctest: +SKIP
            ()
        """
        return collect_garbage(self.root, self.objects, grace=grace, dry_run=dry_run)

    def verify(self) -> VerifyResult:
        """Checks that every version's stored object is present and matches its sha256.

        Reads every referenced object once; only reads, so it works on a read-only
        registry and while others push.

        Returns:
            A `VerifyResult`; ``result.ok`` is False when any object is missing,
            unreadable or corrupted, and ``result.problems`` names each one and the
            versions stored in it.

        Raises:
            RegistryError: the index cannot be read, or holds a row kmot never writes.

        Example:
            >>> Registry("registry").verify().ok   # doctest: +SKIP
            True
        """
        return verify_objects(self.root, self.objects)

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
                the pushed file was). Missing parent folders are created, and removed
                again if the pull fails.

        Returns:
            The path written.

        Raises:
            RegistryError: unknown name or version, the stored object is missing or
                does not match its checksum, ``dest`` cannot be written (e.g. it lies
                under a regular file), or the index row was edited outside kmot.

        Example:
            >>> Registry("registry").pull("digits", dest="deploy/")   # doctest: +SKIP
            PosixPath('deploy/model.tflite')
        """
        chosen = self.show(name, version)           # its source is a checked file name
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
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise RegistryError(
                f"Cannot pull to {dest}: {blocker} is a file, not a folder. Expected `dest` "
                f"(-o) to be a file path in a folder, or a folder; pick another path. Nothing "
                f"was written. Received: dest={str(dest)!r}")
        found, size = self.objects.copy_out(chosen.sha256, target, dest=dest)
        if found != chosen.sha256:
            raise RegistryError(
                f"Checksum mismatch: the stored object of {chosen.label} is corrupted. "
                f"Expected sha256 {chosen.sha256} ({chosen.size_bytes} bytes). Received: "
                f"sha256 {found} ({size} bytes) in {obj}. {fix}. Nothing was written to "
                f"{target}.")
        return target
