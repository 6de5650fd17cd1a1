"""Content-addressed artifact files: ``objects/<sha256[:2]>/<sha256>``.

Every write goes through `kmot._files` (a temporary file beside the target, hashed
while it is copied so the digest is that of the bytes actually written, flushed,
then renamed over the target). Two processes storing the
same content rename identical bytes onto the same name, so the race is harmless.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kmot._files import copy_atomically, fsync_dir, sha256_file, write_temp
from kmot.errors import RegistryError

__all__ = ["ObjectStore", "copy_atomically", "copy_verified", "sha256_file"]


class ObjectStore:
    """A folder of files named by the sha256 of their content; each content stored once.

    Args:
        folder: the ``objects`` folder (created on the first `put`).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, sha256: str) -> Path:
        """Where the object with this digest lives (whether or not it exists)."""
        return self.folder / sha256[:2] / sha256

    def put(self, src: str | os.PathLike) -> tuple[str, int]:
        """Stores a copy of ``src``; returns its sha256 hex digest and size in bytes.

        The copy is hashed as it is written, so the digest always names the stored
        bytes even if ``src`` changes meanwhile. Storing content that is already
        present rewrites the same bytes, which also restores a damaged object.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp, digest, size = write_temp(src, self.folder, "incoming")
        try:
            target = self.path(digest)
            target.parent.mkdir(exist_ok=True)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size

    def copy_out(self, sha256: str, target: Path, *, dest: str | os.PathLike) -> tuple[str, int]:
        """Copies an object to ``target`` if its bytes hash to ``sha256`` (see `copy_verified`)."""
        obj = self.path(sha256)
        return copy_verified(obj, target, sha256=sha256, dest=dest,
                             unreadable=f"Cannot read the stored object {obj}. Expected the "
                                        f"registry's files to be readable by this user; check "
                                        f"their permissions.")


def copy_verified(src: Path, target: Path, *, sha256: str, dest: str | os.PathLike,
                  unreadable: str) -> tuple[str, int]:
    """Copies ``src`` to ``target`` if its bytes hash to ``sha256``.

    Missing parent folders of ``target`` are created, and removed again when
    nothing is written (an error, or a digest that does not match), so a refused
    pull leaves no trace. ``dest`` is what the caller asked for, and ``unreadable``
    the sentence that says ``src`` cannot be read, for messages.

    Returns:
        The sha256 and size of the bytes read: ``target`` was written only if the
        digest equals ``sha256``.

    Raises:
        RegistryError: ``src`` cannot be read or ``target`` cannot be written.
    """
    made = _missing_folders(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        found, size = copy_atomically(src, target, expected_sha256=sha256)
    except OSError as err:
        _remove_folders(made)
        if err.filename is not None and os.fspath(err.filename) == os.fspath(src):
            raise RegistryError(f"{unreadable} Received: {err}") from None
        raise RegistryError(
            f"Cannot write the pulled file. Expected `dest` (-o) to be a file path in a "
            f"folder this user can write to, or an existing folder. Nothing was written. "
            f"Received: dest={str(dest)!r} ({err})") from None
    except BaseException:
        _remove_folders(made)
        raise
    if found != sha256:
        _remove_folders(made)
    return found, size


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:         # deepest first; one that is no longer empty stays
        with contextlib.suppress(OSError):
            folder.rmdir()
