"""What a registry backend implements, and which backend a ``root`` names.

`Registry` checks every argument, then hands it to one backend: a folder
(`kmot.registry.folder`) for a path, or a server for a URI whose scheme is in
`SCHEMES` (``mlflow://host:port``: `kmot.registry.mlflow_store`). A server
backend's module is imported only when a root names it, so a folder registry
never loads the server's client library.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Protocol

from kmot.errors import RegistryError
from kmot.registry.records import (
    GcResult,
    ModelVersion,
    Promotion,
    RegisteredModel,
    VerifyResult,
)

__all__ = ["SCHEMES", "Backend", "open_backend", "scheme_of"]

#: URI scheme -> "module:class" of the backend it names. Each class is built from the URI.
SCHEMES = {
    "mlflow": "kmot.registry.mlflow_store:MlflowBackend",
    "mlflow+http": "kmot.registry.mlflow_store:MlflowBackend",
    "mlflow+https": "kmot.registry.mlflow_store:MlflowBackend",
}


class Backend(Protocol):
    """The storage behind a `Registry`; every argument arrives checked.

    ``root`` is what `Registry.root` shows: the folder, or the server URI.
    """

    root: Path | str

    def push(self, artifact: Path, *, name: str, source: str, report: dict[str, Any] | None,
             metadata: dict[str, Any], tags: tuple[str, ...]) -> ModelVersion: ...

    def promote(self, name: str, version: int) -> ModelVersion: ...

    def rollback(self, name: str) -> ModelVersion: ...

    def list(self, name: str | None) -> list[ModelVersion]: ...

    def models(self) -> list[RegisteredModel]: ...

    def show(self, name: str, version: int | None) -> ModelVersion: ...

    def current(self, name: str) -> ModelVersion | None: ...

    def history(self, name: str) -> list[Promotion]: ...

    def pull(self, chosen: ModelVersion, target: Path, *, dest: str | os.PathLike) -> None:
        """Writes ``chosen``'s artifact to ``target`` only if its sha256 matches, or raises."""

    def gc(self, *, grace: float, dry_run: bool) -> GcResult: ...

    def verify(self) -> VerifyResult: ...


def scheme_of(root: str | os.PathLike) -> str | None:
    """The URI scheme of ``root`` (lowercase), or None for a folder path."""
    if not isinstance(root, str) or "://" not in root:
        return None
    return root.split("://", 1)[0].lower()


def open_backend(root: str | os.PathLike) -> Backend:
    """The backend ``root`` names: a folder path, or a server URI (see `SCHEMES`).

    Raises:
        RegistryError: a URI whose scheme no backend serves, or a root that is a file.
    """
    scheme = scheme_of(root)
    if scheme is None:
        from kmot.registry.folder import FolderBackend

        return FolderBackend(Path(root).expanduser())
    if scheme not in SCHEMES:
        raise RegistryError(
            f"Expected the registry root to be a folder, or an MLflow tracking server as "
            f"mlflow://HOST:PORT (mlflow+https://HOST for TLS). Received: root={root!r}")
    module, name = SCHEMES[scheme].split(":")
    return getattr(importlib.import_module(module), name)(root)
