"""Temporary folders named after the process that owns them, so a killed run's go.

`to_litert` writes a SavedModel (tens of MB, up to hundreds) and `compare` its
artifacts into a temporary folder; a run killed with SIGKILL never removes it.
Each folder is named ``kmot-<purpose>-<pid>-<random>``, and creating one first
removes the folders of the same purpose whose process is gone and that have
not changed for a grace period (a pid from another pid namespace looks dead
here, the grace period keeps its folder while it is plausibly in use).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

__all__ = ["GRACE_SECONDS", "remove_stale", "temporary_directory"]

#: How long a folder of a dead process is kept after its last change.
GRACE_SECONDS = 3600.0


def _pattern(purpose: str) -> re.Pattern[str]:
    return re.compile(rf"kmot-{re.escape(purpose)}-(?:(\d+)-)?[A-Za-z0-9_]+")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a number no process has): keep it
    return True


def remove_stale(purpose: str, *, grace: float = GRACE_SECONDS,
                 folder: str | os.PathLike | None = None) -> list[Path]:
    """Removes ``kmot-<purpose>-*`` folders left by processes that no longer run.

    A folder goes when it is a real folder (not a link) of this user, unchanged
    for ``grace`` seconds, and its owner pid is not alive (folders from kmot
    versions that did not name the pid go on age alone). Failures are ignored:
    cleaning up never stops the run that triggered it.

    Returns:
        The folders removed.
    """
    root = Path(folder if folder is not None else tempfile.gettempdir())
    pattern, now, removed = _pattern(purpose), time.time(), []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (not stat.S_ISDIR(info.st_mode) or now - info.st_mtime < grace
                or (hasattr(os, "getuid") and info.st_uid != os.getuid())
                or (match.group(1) is not None and _alive(int(match.group(1))))):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(entry.path)
            removed.append(Path(entry.path))
    return removed


def temporary_directory(purpose: str) -> tempfile.TemporaryDirectory:
    """A `tempfile.TemporaryDirectory` named ``kmot-<purpose>-<pid>-...``.

    Stale folders of the same purpose (see `remove_stale`) are removed first.
    """
    remove_stale(purpose)
    return tempfile.TemporaryDirectory(prefix=f"kmot-{purpose}-{os.getpid()}-")
