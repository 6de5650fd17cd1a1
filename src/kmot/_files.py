"""The one way kmot writes a file: whole or not at all, with the user's umask.

Every write goes to a fresh dot-prefixed temporary file beside the target (same
filesystem, so the final `os.replace` is an atomic rename), is flushed to disk,
then renamed over the target. A reader never sees a half-written file, a crash
leaves at most a ``.<name>.<random>.part`` file (which ``kmot registry gc`` and
the next write ignore), and the file gets the permissions of any file the user
creates (``0o666`` less the umask; `tempfile.mkstemp` would give ``0o600``).
Writing a file first removes the ``.part`` files earlier, killed writes of the
same name left beside it, once they are older than `STALE_SECONDS` (a write in
progress keeps its file fresh).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["PART_SUFFIX", "STALE_SECONDS", "atomic_path", "remove_stale_parts", "copy_atomically", "sha256_file", "write_atomic"]

#: The suffix of every temporary file a write leaves behind if it is killed.
PART_SUFFIX = ".part"
#: How old a left-behind ``.part`` file must be before the next write removes it.
STALE_SECONDS = 3600.0
_CHUNK = 1 << 20


def remove_stale_parts(folder: Path, stem: str, *, older_than: float = STALE_SECONDS,
                       folders: bool = False) -> int:
    """Removes killed writes' ``.<stem>.<random>.part*`` files (with ``folders``: the
    ``.<stem>.<random>.part`` folders of atomic folder writes) older than ``older_than`` s."""
    import shutil

    removed = 0
    cutoff = time.time() - older_than
    pattern = f".{glob.escape(stem)}.*{PART_SUFFIX}" + ("" if folders else "*")
    kind, remove = (stat.S_ISDIR, shutil.rmtree) if folders else (stat.S_ISREG, Path.unlink)
    with contextlib.suppress(OSError):
        for candidate in folder.glob(pattern):
            with contextlib.suppress(OSError):
                info = candidate.lstat()
                if kind(info.st_mode) and info.st_mtime < cutoff:
                    remove(candidate)
                    removed += 1
    return removed


def temp_path(folder: Path, stem: str) -> Path:
    """A new, unused temporary path in ``folder`` for a file that will be named ``stem``."""
    remove_stale_parts(folder, stem)
    return folder / f".{stem}.{secrets.token_hex(8)}{PART_SUFFIX}"


def _open_new(path: Path) -> BinaryIO:
    # Mode 0o666 lets the umask decide the final permissions.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return os.fdopen(fd, "wb")


def fsync_dir(folder: Path) -> None:
    """Makes a rename into ``folder`` durable (a no-op where folders cannot be synced)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
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


def write_temp(src: str | os.PathLike, folder: Path, stem: str) -> tuple[Path, str, int]:
    """Copies ``src`` to a new temporary file in ``folder``, flushed to disk.

    Returns:
        The temporary file, and the sha256 hex digest and size of the bytes written.
    """
    tmp = temp_path(folder, stem)
    try:
        with _open_new(tmp) as out, open(src, "rb") as inp:
            digest, size = _copy(inp, out)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest, size


def write_atomic(path: str | os.PathLike, content: bytes | str) -> Path:
    """Writes ``content`` (bytes, or text as UTF-8) to ``path``, whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = temp_path(path.parent, path.name)
    try:
        with _open_new(tmp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path for a writer that wants a file name (e.g. ``model.save``).

    The file written there replaces ``path`` when the block exits normally; on an
    exception it is removed and ``path`` is untouched. ``suffix`` is kept at the end
    of the temporary name for writers that check the extension (``.keras``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path.parent, path.name)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}{PART_SUFFIX}{suffix}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # Writers create the file with their own mode: give it the umask's.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    tmp, digest, size = write_temp(src, dest.parent, dest.name)
    try:
        if expected_sha256 is None or digest == expected_sha256:
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return digest, size
