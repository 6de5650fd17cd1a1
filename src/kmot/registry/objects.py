"""Content-addressed artifact files: ``objects/<sha256[:2]>/<sha256>``.

Every write goes through `kmot._files` (a temporary file beside the target, hashed
while it is copied so the digest is that of the bytes actually written, flushed,
then renamed over the target). Two processes storing the
same content rename identical bytes onto the same name, so the race is harmless.
"""

from __future__ import annotations

import os
from pathlib import Path

from kmot._files import copy_atomically, fsync_dir, sha256_file, write_temp

__all__ = ["ObjectStore", "copy_atomically", "sha256_file"]


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
