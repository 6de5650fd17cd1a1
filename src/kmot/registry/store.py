"""`Registry`: versioned, checksummed model artifacts with a production pointer and rollback.

One API over two backends (`kmot.registry.backend`): a folder on a local disk
(`kmot.registry.folder`: a SQLite index and content-addressed objects), or an
MLflow tracking server's model registry (`kmot.registry.mlflow_store`), chosen by
``root``: a path, or ``mlflow://host:port``.

Versions of a name are numbered 1, 2, 3, ... in push order. The production version
of a name is the top of a stack: `promote` pushes onto it, `rollback` pops it, so
the previous production version is current again.

This class checks every argument once, for every backend, and resolves where
`pull` writes; the backend stores and reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kmot.errors import RegistryError
from kmot.registry.backend import Backend, open_backend, scheme_of
from kmot.registry.maintenance import DEFAULT_GRACE_S, check_grace
from kmot.registry.records import (
    GcResult,
    ModelVersion,
    Promotion,
    RegisteredModel,
    VerifyResult,
)
from kmot.registry.reports import load_report
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


def default_root() -> Path | str:
    """The registry used when none is given: ``$KMOT_REGISTRY`` or ``~/.kmot/registry``.

    ``$KMOT_REGISTRY`` may also name a server (``mlflow://host:port``): it is then
    returned as the string it is.

    Example:
        >>> default_root()                         # doctest: +SKIP
        PosixPath('/home/me/.kmot/registry')
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if scheme_of(env) is not None:
        return env
    return Path(env).expanduser() if env else Path.home() / ".kmot" / "registry"


class Registry:
    """A model registry: push, list, show, promote, rollback, pull, gc, verify.

    ``root`` picks the backend: a folder on a local disk (safe for several
    processes at once: pushes to the same name get distinct versions and none is
    lost; promote and rollback are single transactions), or an MLflow tracking
    server's model registry, ``mlflow://host:port`` (``mlflow+https://host`` for
    TLS; needs ``pip install "kmot[mlflow]"``; see docs/registry.md). Both return
    the same records and raise the same errors; `gc` is folder-only.

    Args:
        root: the registry folder (created on the first push), or an MLflow server
            URI. Default: `default_root()`, i.e. ``$KMOT_REGISTRY`` or
            ``~/.kmot/registry``.

    Raises:
        RegistryError: ``root`` is a file, a URI no backend serves, or a malformed
            MLflow URI (a server is first contacted by the first operation).

    Example:
        >>> registry = Registry("registry")                              # doctest: +SKIP
        >>> v = registry.push("model.tflite", name="digits",
        ...                   report="report/report.json")              # doctest: +SKIP
        >>> registry.promote("digits", v.version)                        # doctest: +SKIP
        >>> registry.pull("digits", dest="deploy/model.tflite")          # doctest: +SKIP
        >>> Registry("mlflow://127.0.0.1:5000").current("digits")       # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.backend: Backend = open_backend(root if root is not None else default_root())

    @property
    def root(self) -> Path | str:
        """The registry folder (a `Path`), or the server URI (a `str`) as given."""
        return self.backend.root

    def __repr__(self) -> str:
        return f"Registry(root={str(self.root)!r})"

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

        The file is hashed as it is copied (into the folder's content-addressed
        objects, where identical content is stored once, or into the upload to the
        server), so the recorded sha256 is that of the bytes stored. The version is
        recorded only once its file is stored; concurrent pushes get distinct
        versions.

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
                a registry folder this user cannot write to, or a server that cannot
                be reached or refuses the push.

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
        return self.backend.push(artifact, name=name, source=source, report=report_data,
                                 metadata=meta, tags=tag_list)

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
        return self.backend.promote(check_name(name), check_version(version))

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
        return self.backend.rollback(check_name(name))

    # -- reading ------------------------------------------------------------------

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every version of ``name`` (or of every model), oldest first.

        Raises:
            RegistryError: ``name`` is given and has no versions.

        Example:
            >>> [v.version for v in Registry("registry").list("digits")]   # doctest: +SKIP
            [1, 2, 3]
        """
        return self.backend.list(None if name is None else check_name(name))

    def models(self) -> list[RegisteredModel]:
        """Every model name with its number of versions, latest and production version.

        Example:
            >>> models = Registry("registry").models()                 # doctest: +SKIP
            >>> [(m.name, m.production_version) for m in models]        # doctest: +SKIP
            [('digits', 2)]
        """
        return self.backend.models()

    def show(self, name: str, version: int | None = None) -> ModelVersion:
        """One version of ``name``; by default the production version, else the latest.

        Raises:
            RegistryError: unknown name or version.

        Example:
            >>> Registry("registry").show("digits").metrics   # doctest: +SKIP
            {'accuracy': 0.97, 'accuracy_delta': -0.004, 'p50_ms': 0.05, ...}
        """
        name = check_name(name)
        return self.backend.show(name, None if version is None else check_version(version))

    def current(self, name: str) -> ModelVersion | None:
        """The production version of ``name``, or ``None`` if none was ever promoted.

        Raises:
            RegistryError: unknown name.

        Example:
            >>> Registry("registry").current("digits").version   # doctest: +SKIP
            2
        """
        return self.backend.current(check_name(name))

    def history(self, name: str) -> list[Promotion]:
        """Every promote and rollback of ``name``, oldest first.

        Raises:
            RegistryError: unknown name.

        Example:
            >>> [e.action for e in Registry("registry").history("digits")]  # doctest: +SKIP
            ['promote', 'promote', 'rollback']
        """
        return self.backend.history(check_name(name))

    def gc(self, *, grace: float = DEFAULT_GRACE_S, dry_run: bool = False) -> GcResult:
        """Removes stored objects no version refers to, and files left by killed writes.

        Objects become unreferenced only when a push dies between storing its file
        and recording its version (or when the index is edited). Files younger than
        ``grace`` seconds are kept, since a push may still be writing or recording
        them, so gc is safe to run while others push. A folder registry only: a
        server cleans its own artifact store.

        Args:
            grace: seconds; files last written more recently are kept (default 1 hour).
            dry_run: only report what would be removed (works on a read-only registry).

        Returns:
            A `GcResult`: the digests and partial files removed, and the bytes freed.

        Raises:
            RegistryError: a bad ``grace``, a registry this user cannot write to (unless
                ``dry_run``), an index holding a row kmot never writes, or a registry
                that is not a folder.

        Example:
            >>> Registry("registry").gc(grace=0, dry_run=True).removed_objects  # doctest: +SKIP
            ()
        """
        return self.backend.gc(grace=check_grace(grace), dry_run=bool(dry_run))

    def verify(self) -> VerifyResult:
        """Checks that every version's stored artifact is present and matches its sha256.

        Reads every referenced artifact once (from a server: downloads it); only
        reads, so it works on a read-only registry and while others push.

        Returns:
            A `VerifyResult`; ``result.ok`` is False when any artifact is missing,
            unreadable or corrupted, and ``result.problems`` names each one and the
            versions stored in it.

        Raises:
            RegistryError: the index cannot be read, or holds a row kmot never writes;
                the server cannot be reached.

        Example:
            >>> Registry("registry").verify().ok   # doctest: +SKIP
            True
        """
        return self.backend.verify()

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
            RegistryError: unknown name or version, the stored artifact is missing or
                does not match its checksum, ``dest`` cannot be written (e.g. it lies
                under a regular file), or the stored record was edited outside kmot.

        Example:
            >>> Registry("registry").pull("digits", dest="deploy/")   # doctest: +SKIP
            PosixPath('deploy/model.tflite')
        """
        chosen = self.show(name, version)           # its source is a checked file name
        target = Path(dest)
        if target.is_dir() or str(dest).endswith(("/", os.sep)):
            target = target / chosen.source
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise RegistryError(
                f"Cannot pull to {dest}: {blocker} is a file, not a folder. Expected `dest` "
                f"(-o) to be a file path in a folder, or a folder; pick another path. Nothing "
                f"was written. Received: dest={str(dest)!r}")
        self.backend.pull(chosen, target, dest=dest)
        return target
