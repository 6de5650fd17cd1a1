"""The registry's SQLite index: versions, the production stack of each model, events.

Each operation opens its own connection and runs in one transaction. Writers take
the write lock up front (``BEGIN IMMEDIATE``), so reading the next version number
and inserting it cannot interleave with another process; readers in WAL mode see
a consistent snapshot and never block writers. A busy writer is waited for (up to
`BUSY_TIMEOUT_S`), not failed.

Reading creates and changes nothing. When the index or its folder is not writable
(a registry shared read-only, or owned by another user), it is opened read-only;
SQLite then cannot create the ``-shm`` file a WAL index is read through, so if no
writer has the index open (no ``-wal`` file beside it) it is read as immutable.
That read takes no lock: a writer (another user) that starts and checkpoints within
its milliseconds could make it see half-old, half-new pages, most likely as an
error; rerun it. Reading changes nothing either way. Only a write creates the
file, its tables, or switches it to WAL.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from kmot.errors import RegistryError
from kmot.registry.messages import unknown_name, unknown_version
from kmot.registry.records import ModelVersion
from kmot.registry.validate import check_stored_version

__all__ = ["BUSY_TIMEOUT_S", "SCHEMA_VERSION", "connect", "latest_version", "production_version",
           "production_versions", "read_only_error", "to_model_version", "version_row",
           "writable"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0

# production: one stack per model; its top row (highest position) is the production
# version, and a rollback deletes that row. events: every promote and rollback.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    source TEXT NOT NULL,
    report TEXT,
    metrics TEXT NOT NULL,
    metadata TEXT NOT NULL,
    tags TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS production (
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    version INTEGER NOT NULL,
    promoted_at TEXT NOT NULL,
    PRIMARY KEY (name, position),
    FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    version INTEGER NOT NULL,
    previous INTEGER,
    at TEXT NOT NULL
);
"""


def writable(path: Path) -> bool:
    """Whether this process may change the index at ``path`` (the file and its folder)."""
    folder = path.parent
    return os.access(folder, os.W_OK | os.X_OK) and (not path.exists()
                                                     or os.access(path, os.W_OK))


def _open(path: Path, *, write: bool) -> sqlite3.Connection:
    target: str | Path = path
    if not write and not writable(path):
        wal = path.with_name(path.name + "-wal")
        mode = "ro" if wal.exists() else "ro&immutable=1"
        target = f"file:{quote(str(path.absolute()))}?mode={mode}"
    # isolation_level=None: no implicit transactions; each operation says BEGIN itself.
    conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           uri=not isinstance(target, Path))
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path) -> int:
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise RegistryError(
            f"This registry index was written by a newer kmot (index schema {found}; this "
            f"kmot reads up to {SCHEMA_VERSION}). Upgrade kmot to use it. Received: {path}")
    return found


def _set_wal(conn: sqlite3.Connection) -> None:
    # Switching a new index to WAL needs a moment of exclusive access, and a second
    # process creating the registry at the same instant may be told "database is
    # locked" instead of being made to wait: retry here until the busy timeout.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def connect(path: Path, *, write: bool) -> Iterator[sqlite3.Connection | None]:
    """One transaction on the index at ``path``; commits on success, rolls back on error.

    A read of an index that does not exist yet yields ``None`` (an empty registry)
    and creates nothing. A write creates the file and its tables on first use.

    Raises:
        RegistryError: the index was written by a newer kmot, is not a SQLite file, or
            stayed locked by another process for longer than `BUSY_TIMEOUT_S`.
    """
    if not write and not path.exists():
        yield None
        return
    if path.exists() and not path.is_file():
        raise RegistryError(
            f"Cannot use the registry index. Expected index.sqlite to be the SQLite file kmot "
            f"writes; the folder was changed outside kmot. Restore it from a backup or point "
            f"`root=` / --root at another registry folder. Received: {path} is not a file")
    conn = None
    try:
        conn = _open(path, write=write)
        if write:
            _set_wal(conn)
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        found = _check_schema(conn, path)
        if write and found < SCHEMA_VERSION:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.Error as err:
        if conn is not None:
            conn.close()
        raise _unusable(path, err, write=write) from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    try:
        # An index whose creation never committed has no tables yet: an empty registry.
        yield conn if write or found else None
    except BaseException:
        with contextlib.suppress(sqlite3.Error):   # keep the original error, not this one
            conn.execute("ROLLBACK")
        conn.close()
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        raise _unusable(path, err, write=write) from None
    finally:
        conn.close()


def read_only_error(root: Path, err: object) -> RegistryError:
    """The error of a write to a registry this process may not change."""
    return RegistryError(
        f"Cannot write to the registry at {root}. Expected a registry folder this user can "
        f"write to: push, promote, rollback and gc change it, while list, show, history, "
        f"pull and verify only read it. Check the folder's owner and permissions, or pass "
        f"another `root=` / --root. Received: {err}")


def _unusable(path: Path, err: sqlite3.Error, *, write: bool) -> RegistryError:
    if write and ("readonly" in str(err) or not writable(path)):
        return read_only_error(path.parent, f"{path} ({err})")
    if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
        return RegistryError(
            f"The registry index stayed locked by another process for more than "
            f"{BUSY_TIMEOUT_S:.0f} s. Expected writers to hold it for milliseconds: look for a "
            f"stuck kmot process using this registry and retry. Received: {path} ({err})")
    return RegistryError(
        f"Cannot use the registry index. Expected a SQLite file written by kmot, on a local "
        f"disk (SQLite's locking is unreliable on network filesystems); point `root=` / "
        f"--root at a registry folder. Received: {path} ({err})")


# -- queries shared by the registry's operations ---------------------------------------


def latest_version(conn: sqlite3.Connection | None, root: Path, name: str) -> int:
    """The latest version of ``name`` (``conn`` None: an empty registry).

    Raises:
        RegistryError: ``name`` has no versions.
    """
    latest = None
    if conn is not None:
        latest = conn.execute("SELECT MAX(version) FROM versions WHERE name = ?",
                              (name,)).fetchone()[0]
    if latest is None:
        known = [] if conn is None else [r[0] for r in conn.execute(
            "SELECT DISTINCT name FROM versions ORDER BY name LIMIT 20")]
        raise unknown_name(name, known, root)
    return latest


def version_row(conn: sqlite3.Connection | None, root: Path, name: str,
                version: int) -> sqlite3.Row:
    """The row of one version.

    Raises:
        RegistryError: unknown name or version.
    """
    row = None if conn is None else conn.execute(
        "SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)).fetchone()
    if row is None:
        raise unknown_version(name, version, latest_version(conn, root, name))
    return row


def production_version(conn: sqlite3.Connection | None, name: str) -> int | None:
    """The top of ``name``'s production stack, or None if it was never promoted."""
    if conn is None:
        return None
    row = conn.execute("SELECT version FROM production WHERE name = ? "
                       "ORDER BY position DESC LIMIT 1", (name,)).fetchone()
    return None if row is None else row[0]


def production_versions(conn: sqlite3.Connection) -> dict[str, int]:
    """``{name: production version}`` for every promoted model."""
    return {r["name"]: r["version"] for r in conn.execute(
        "SELECT p.name, p.version FROM production p JOIN "
        "(SELECT name, MAX(position) AS top FROM production GROUP BY name) t "
        "ON p.name = t.name AND p.position = t.top")}


def to_model_version(row: sqlite3.Row, *, production: int | None) -> ModelVersion:
    """A `ModelVersion` from a ``versions`` row; ``production`` is the name's production version.

    Raises:
        RegistryError: the row holds a value kmot never writes (the index was edited).
    """
    fields = check_stored_version(row)
    return ModelVersion(**fields, production=fields["version"] == production)
