"""Writing a folder whole or not at all (a SavedModel is a folder, not a file).

The folder is written under a fresh dot-prefixed name beside the target (same
filesystem), its files are flushed to disk, then it is renamed to the target.
An existing target is first renamed aside and removed only once the new folder
is in place, so a reader finds the old folder, the new one, or (for the instant
between two renames) none: never a half-written one. A killed write leaves a
``.<name>.<random>.part`` folder, removed by a later write of the same name once
it is older than `kmot._files.STALE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from kmot._files import PART_SUFFIX, STALE_SECONDS, fsync_dir, remove_stale_parts

__all__ = ["atomic_folder", "remove_stale_folders"]


def remove_stale_folders(parent: Path, name: str, *, older_than: float = STALE_SECONDS) -> int:
    """Removes killed writes' ``.<name>.*.part`` folders older than ``older_than`` s."""
    return remove_stale_parts(parent, name, older_than=older_than, folders=True)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A new empty folder beside ``path`` that replaces ``path`` when the block exits.

    On an exception the new folder is removed and ``path`` is untouched. The
    caller decides beforehand whether an existing ``path`` may be replaced.
    """
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(parent, path.name)
    tmp = parent / f".{path.name}.{secrets.token_hex(8)}{PART_SUFFIX}"
    os.mkdir(tmp)  # mode 0o777 less the umask, like any folder the user creates
    try:
        yield tmp
        _fsync_tree(tmp)
        if os.path.lexists(path):
            old = parent / f".{path.name}.{secrets.token_hex(8)}.old{PART_SUFFIX}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        fsync_dir(parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
