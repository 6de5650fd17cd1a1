"""Registry upkeep: `collect_garbage` (``gc``) and `verify_objects` (``verify``).

Both are safe to run while other processes push, pull and promote. Safety rests on
the order in which `Registry.push` writes, and on one lock:

1. push copies the artifact to ``objects/.incoming.<random>.part``, hashing it as
   it writes (the file's mtime advances with every write), flushes it to disk and
   renames it to ``objects/<sha256[:2]>/<sha256>``: a fresh file, so a fresh mtime,
   even when that content was stored before;
2. push then takes the index's write lock (``BEGIN IMMEDIATE``), checks that the
   object is still there (storing it again if not), inserts the version row and
   commits.

gc lists ``objects/`` without the lock, then takes the same write lock, reads the
set of digests that committed rows refer to, and deletes only unreferenced objects
whose mtime is older than the grace period (checked again under the lock). So:

- a committed version's object is never deleted: gc sees every committed row;
- an object between steps 1 and 2 is younger than the grace period, so gc keeps it;
  were it deleted anyway (a push that waited longer than the grace, or
  ``grace=0``), step 2 runs after gc released the lock, notices, and stores the
  object again before recording the version;
- a ``.part`` file is removed only when its mtime is older than the grace period,
  which a live write keeps fresh; were a live one removed anyway, its rename in
  step 1 fails and push copies the artifact again.

``grace=0`` is for a registry nobody is pushing to: each removal it makes during a
push costs that push another copy (after three, the push gives up, recording
nothing).

Versions are never deleted, so what `verify_objects` reads from one snapshot of
the index stays referenced while it hashes the files; a push that stores content
again replaces the file by a rename, and a reader keeps the file it opened.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from kmot._files import PART_SUFFIX, sha256_file
from kmot.errors import RegistryError
from kmot.registry import index
from kmot.registry.objects import ObjectStore
from kmot.registry.records import GcResult, VerifyProblem, VerifyResult
from kmot.registry.validate import check_sha256, check_stored_version

__all__ = ["DEFAULT_GRACE_S", "check_grace", "collect_garbage", "verify_objects"]

#: Files younger than this are left to the push that may still be writing them.
DEFAULT_GRACE_S = 3600.0

_OBJECT = re.compile(r"[0-9a-f]{64}")


def check_grace(grace: object) -> float:
    """The grace period in seconds, if it is a finite number >= 0 (a bool is refused)."""
    if (isinstance(grace, bool) or not isinstance(grace, (int, float))
            or not math.isfinite(grace) or grace < 0):
        raise RegistryError(
            f"Expected `grace=` in seconds: a finite number >= 0 (default "
            f"{DEFAULT_GRACE_S:.0f}, one hour). Files younger than it are kept, because a "
            f"push may still be writing them. Received: grace={grace!r}")
    return float(grace)


def _is_partial(name: str) -> bool:
    return name.startswith(".") and name.endswith(PART_SUFFIX)


def _files(folder: Path) -> Iterator[os.DirEntry]:
    """The regular files (not symlinks) directly in ``folder``; none if it is not a folder."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
        yield from (e for e in entries if e.is_file(follow_symlinks=False))


def _scan(root: Path, objects: ObjectStore) -> tuple[dict[str, Path], list[Path]]:
    """Stored objects by digest, and partial files, of what kmot writes; nothing else."""
    stored: dict[str, Path] = {}
    partials = [Path(e.path) for folder in (root, objects.folder) for e in _files(folder)
                if _is_partial(e.name)]
    shards: list[Path] = []
    missing = (FileNotFoundError, NotADirectoryError)
    with contextlib.suppress(*missing), os.scandir(objects.folder) as entries:
        shards = [Path(e.path) for e in entries
                  if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    for shard in shards:
        for entry in _files(shard):
            if _is_partial(entry.name):
                partials.append(Path(entry.path))
            elif _OBJECT.fullmatch(entry.name) and entry.name[:2] == shard.name:
                stored[entry.name] = Path(entry.path)
    return stored, partials


def _old(path: Path, cutoff: float) -> os.stat_result | None:
    """The file's stat if it still exists and was last written before ``cutoff``."""
    try:
        st = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st if st.st_mtime <= cutoff else None


def collect_garbage(root: Path, objects: ObjectStore, *, grace: float,
                    dry_run: bool) -> GcResult:
    """Removes unreferenced objects and partial files older than ``grace`` seconds.

    See the module docstring for why this is safe while others push.

    Raises:
        RegistryError: the registry cannot be written (unless ``dry_run``), or its
            index holds a row kmot never writes (then nothing is removed).
    """
    grace = check_grace(grace)
    cutoff = time.time() - grace
    stored, partials = _scan(root, objects)
    index_path = root / "index.sqlite"
    removed: list[str] = []
    freed = kept = 0
    # Deleting under the write lock means no push commits a row naming an object while
    # gc decides about it. A dry run only reads, so it works on a read-only registry.
    with index.connect(index_path, write=not dry_run and index_path.exists()) as conn:
        referenced = set() if conn is None else {
            check_sha256(r["sha256"], row=f"versions row (name={r['name']!r}, "
                                         f"version={r['version']!r})")
            for r in conn.execute("SELECT name, version, sha256 FROM versions")}
        for digest in sorted(set(stored) - referenced):
            st = _old(stored[digest], cutoff)
            if st is None:
                kept += stored[digest].exists()
                continue
            if not dry_run:
                _remove(root, stored[digest])
            removed.append(digest)
            freed += st.st_size
    removed_partials: list[str] = []
    for path in sorted(partials):
        st = _old(path, cutoff)
        if st is None:
            kept += path.exists()
            continue
        if not dry_run:
            _remove(root, path)
        removed_partials.append(path.relative_to(root).as_posix())
        freed += st.st_size
    return GcResult(tuple(removed), tuple(removed_partials), freed, kept,
                    len(referenced & set(stored)), grace, dry_run)


def _remove(root: Path, path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise index.read_only_error(root, err) from None


def verify_objects(root: Path, objects: ObjectStore) -> VerifyResult:
    """Hashes every stored object a version refers to and compares it with the index.

    Raises:
        RegistryError: the index cannot be read, or holds a row kmot never writes.
    """
    with index.connect(root / "index.sqlite", write=False) as conn:
        rows = [] if conn is None else [check_stored_version(r) for r in conn.execute(
            "SELECT * FROM versions ORDER BY name, version")]
    users: dict[tuple[str, int], list[str]] = {}
    for row in rows:
        users.setdefault((row["sha256"], row["size_bytes"]), []).append(
            f"{row['name']} v{row['version']}")
    problems = []
    checked = 0
    for (digest, size), versions in sorted(users.items()):
        path = objects.path(digest)
        problem = found = found_bytes = None
        try:
            found_bytes = path.stat().st_size
            found = sha256_file(path)
            checked += found_bytes
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            problem = "missing"
        except OSError:
            problem = "unreadable"
        if problem is None and (found != digest or found_bytes != size):
            problem = "mismatch"
        if problem is not None:
            problems.append(VerifyProblem(digest, size, problem, tuple(versions), str(path),
                                          found, found_bytes))
    return VerifyResult(len(users), len(rows), checked, tuple(problems))
