"""A lock on one model's production history, held on the MLflow server itself.

MLflow has no transactions and its tags no compare-and-set, yet a promote or
rollback reads the production history, then writes the alias and one event: two
at once could pop the same version twice or lose an event. So each takes a lock
first, and the one operation MLflow makes atomic serves as one: creating a
registered model whose name exists already fails (the name is unique in its
database). The lock is the registered model ``_kmot-lock.<name>`` (never a kmot
model name, which starts with a letter or digit), deleted when done.

A lock left by a killed kmot is broken when its creation time has not changed for
`STALE_S` of waiting (timed on this machine's clock, so server clock skew does not
matter). A holder makes a few requests, far below that; a waiter gives up after
`WAIT_S`. Breaking is the one step that is not atomic: two waiters that found the
same stale lock could each delete one, the second deleting the lock the first has
just taken. Each waiter's threshold is drawn from 1 to 1.5 times `STALE_S`, so the
later one sees the new lock first and waits for it instead.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator

from kmot.errors import RegistryError
from kmot.registry.mlflow_client import Server

__all__ = ["LOCK_PREFIX", "STALE_S", "WAIT_S", "locked"]

LOCK_PREFIX = "_kmot-lock."
STALE_S = 30.0
WAIT_S = 120.0


def _created(server: Server, lock: str) -> int | None:
    """The lock's creation time on the server, or None if nobody holds it."""
    try:
        return server.client.get_registered_model(lock).creation_timestamp
    except Exception as err:
        if server.code(err) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


@contextlib.contextmanager
def locked(server: Server, name: str) -> Iterator[None]:
    """Holds the production lock of model ``name`` for the block.

    Raises:
        RegistryError: the lock stayed held (renewed by others) for more than `WAIT_S`.
    """
    client, lock = server.client, LOCK_PREFIX + name
    start = time.monotonic()
    seen, since, stale = None, start, STALE_S * random.uniform(1.0, 1.5)
    while True:
        try:
            client.create_registered_model(
                lock, description=f"kmot: a promote or rollback of {name!r} is running. "
                                  f"Left by a killed kmot if it stays; kmot breaks it after "
                                  f"{STALE_S:.0f} s.")
            break
        except Exception as err:
            if server.code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
        created, waited = _created(server, lock), time.monotonic()
        if created is None:
            continue
        if created != seen:
            seen, since = created, waited
        elif waited - since > stale and _created(server, lock) == seen:
            with contextlib.suppress(Exception):
                client.delete_registered_model(lock)
            continue
        if waited - start > WAIT_S:
            raise RegistryError(
                f"Another kmot kept the production lock of {name!r} on {server.root} for more "
                f"than {WAIT_S:.0f} s. Expected a promote or rollback to hold it for "
                f"milliseconds: look for a stuck kmot, or delete the registered model {lock!r} "
                f"in MLflow, then retry. Received: name={name!r}")
        time.sleep(random.uniform(0.02, 0.1))
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            client.delete_registered_model(lock)
