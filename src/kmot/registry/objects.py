"""Content-addressed artifact files: ``objects/<sha256[:2]>/<sha256>``.

Every write goes to a fresh temporary file in the destination folder, is hashed
while it is copied (so the digest is that of the bytes actually written), flushed
to disk, then renamed over the target with `os.replace`. Two processes storing the
same content rename identical bytes onto the same name, so the race is harmless.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

__all__ = ["ObjectStore", "copy_atomically", "sha256_file"]

_CHUNK = 1 << 20


def _copy(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copies ``src`` into ``dst``; returns the sha256 hex digest and size of the bytes."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_path(folder: Path, stem: str) -> Path:
    # A dot-prefixed random name beside the target: same filesystem, so the final
    # os.replace is an atomic rename, and no reader mistakes it for a finished file.
    return folder / f".{stem}.{secrets.token_hex(8)}.part"


def _fsync_dir(folder: Path) -> None:
    # The index row is committed after this rename: make the rename itself durable
    # first, so a power cut cannot leave a row naming an object that is not there.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(src: str | os.PathLike, folder: Path, stem: str) -> tuple[Path, str, int]:
    """Copies ``src`` to a new temporary file in ``folder``, flushed to disk.

    Returns:
        The temporary file, and the sha256 hex digest and size of the bytes written.
    """
    tmp = _temp_path(folder, stem)
    try:
        # Mode 0o666 lets the umask decide the final permissions, as for any file the
        # user creates (mkstemp would leave it readable by the owner only).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            digest, size = _copy(inp, out)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest, size


def copy_atomically(
    src: str | os.PathLike, dest: str | os.PathLike, *, expected_sha256: str | None = None
) -> tuple[str, int]:
    """Copies ``src`` to ``dest`` through a temporary file and `os.replace`.

    With ``expected_sha256``, ``dest`` is only written when the copied bytes hash to
    it; otherwise the temporary file is removed and ``dest`` is left untouched.

    Returns:
        The sha256 hex digest and the size of the bytes copied (compare the digest
        with ``expected_sha256`` to learn whether ``dest`` was written).
    """
    dest = Path(dest)
    tmp, digest, size = _write_temp(src, dest.parent, dest.name)
    try:
        if expected_sha256 is None or digest == expected_sha256:
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return digest, size


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
        tmp, digest, size = _write_temp(src, self.folder, "incoming")
        try:
            target = self.path(digest)
            target.parent.mkdir(exist_ok=True)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size
