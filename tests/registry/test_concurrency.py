"""Processes pushing to one registry at once, and gc beside them: nothing lost."""

import hashlib
import json
import os
import subprocess
import sys
import time

from kmot.registry import Registry

PUSHES = 10

# Each worker announces it is ready, waits for the common start signal, then pushes
# its own artifacts to "race" and one identical artifact to "shared" (the same
# object file written by both processes).
WORKER = """
import sys, time
from pathlib import Path
from kmot.registry import Registry

root, folder, who, pushes = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
registry = Registry(root)
(folder / f"ready-{who}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
for i in range(pushes):
    registry.push(folder / f"{who}-{i}.bin", name="race", metadata={"who": who, "i": i})
    registry.push(folder / "shared.bin", name="shared")
"""


def _wait_for(paths, procs):
    deadline = time.monotonic() + 120          # a hung worker fails the test, never hangs it
    while not all(p.exists() for p in paths):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.01)


def test_two_processes_pushing_at_once_lose_nothing(tmp_path):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    expected = {}
    for who in ("a", "b"):
        for i in range(PUSHES):
            content = f"{who}-{i}-".encode() * 20_000          # distinct, ~100 KB each
            (folder / f"{who}-{i}.bin").write_bytes(content)
            expected[(who, i)] = hashlib.sha256(content).hexdigest()
    (folder / "shared.bin").write_bytes(b"same bytes from both processes" * 10_000)
    root = tmp_path / "registry"                 # not created yet: both race to create it too

    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(folder), who,
                               str(PUSHES)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for who in ("a", "b")]
    try:
        _wait_for([folder / "ready-a", folder / "ready-b"], procs)
        (folder / "go").touch()
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs

    registry = Registry(root)
    race = registry.list("race")
    assert [v.version for v in race] == list(range(1, 2 * PUSHES + 1))
    assert {(v.metadata["who"], v.metadata["i"]): v.sha256 for v in race} == expected
    for who in ("a", "b"):                         # each process's pushes kept their order
        own = [v.metadata["i"] for v in race if v.metadata["who"] == who]
        assert own == list(range(PUSHES))
    for v in race:
        pulled = registry.pull("race", v.version, dest=tmp_path / "pulled.bin")
        assert hashlib.sha256(pulled.read_bytes()).hexdigest() == v.sha256

    shared = registry.list("shared")
    assert [v.version for v in shared] == list(range(1, 2 * PUSHES + 1))
    assert len({v.sha256 for v in shared}) == 1
    registry.pull("shared", dest=tmp_path / "shared.bin")

    objects = sorted(p for p in (root / "objects").rglob("*") if p.is_file())
    assert len(objects) == 2 * PUSHES + 1          # every artifact once, no temp files left
    assert all(not p.name.startswith(".") for p in objects)


# Runs gc over and over until told to stop, then prints how many passes it made and
# what it removed.
GC_LOOP = """
import json, sys, time
from pathlib import Path
from kmot.registry import Registry

root, folder = sys.argv[1], Path(sys.argv[2])
registry = Registry(root)
(folder / "ready-gc").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
passes, removed = 0, []
while not (folder / "stop").exists() or passes == 0:
    removed += registry.gc(grace=60).removed_objects
    passes += 1
print(json.dumps({"passes": passes, "removed": removed}))
"""

# Pushes its own artifacts; the "revive" ones hold the same bytes as an old object a
# killed push left unreferenced, which is exactly what gc is deciding to delete.
PUSHER = """
import sys, time
from pathlib import Path
from kmot.registry import Registry

root, folder, who, pushes = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
revive = [k for k in sys.argv[5].split(",") if k]
registry = Registry(root)
(folder / f"ready-{who}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
for i in range(pushes):
    registry.push(folder / f"{who}-{i}.bin", name="busy", metadata={"who": who, "i": i})
    if i < len(revive):
        registry.push(folder / f"orphan-{revive[i]}.bin", name="revived")
"""


def test_gc_running_while_processes_push_loses_no_version(tmp_path):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    root = tmp_path / "registry"
    registry = Registry(root)
    (folder / "first.bin").write_bytes(b"committed before the race" * 1000)
    registry.push(folder / "first.bin", name="busy", metadata={"who": "setup", "i": 0})
    old = time.time() - 7200
    orphans = {}
    for k in range(6):                    # what six pushes killed before their rows left
        (folder / f"orphan-{k}.bin").write_bytes(f"orphan {k} ".encode() * 10_000)
        digest, _ = registry.backend.objects.put(folder / f"orphan-{k}.bin")
        os.utime(registry.backend.objects.path(digest), (old, old))
        orphans[k] = digest
    for k in range(3):
        part = root / "objects" / f".incoming.{k:016x}.part"
        part.write_bytes(b"half" * 1000)
        os.utime(part, (old, old))
    who_revives = {"a": "0,1", "b": "2", "c": ""}          # orphans 3, 4, 5 stay garbage
    for who in who_revives:
        for i in range(PUSHES):
            (folder / f"{who}-{i}.bin").write_bytes(f"{who}-{i}-".encode() * 20_000)

    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, str(root), str(folder), who,
                               str(PUSHES), revive], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for who, revive in who_revives.items()]
    procs.append(subprocess.Popen([sys.executable, "-c", GC_LOOP, str(root), str(folder)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        _wait_for([folder / f"ready-{w}" for w in [*who_revives, "gc"]], procs)
        (folder / "go").touch()
        pushed = [p.communicate(timeout=300) for p in procs[:-1]]
        (folder / "stop").touch()
        gc_out, gc_err = procs[-1].communicate(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * len(procs), (pushed, gc_err)
    gc_run = json.loads(gc_out)
    assert gc_run["passes"] >= 1

    busy = registry.list("busy")
    assert [v.version for v in busy] == list(range(1, 3 * PUSHES + 2))
    for v in busy + registry.list("revived"):
        pulled = registry.pull(v.name, v.version, dest=tmp_path / "pulled.bin")
        assert hashlib.sha256(pulled.read_bytes()).hexdigest() == v.sha256
    assert sorted(v.sha256 for v in registry.list("revived")) == sorted(
        orphans[k] for k in (0, 1, 2))
    assert registry.verify().ok

    # gc removed only old orphans: some of 0-2 too, if it got there before their push
    # (which then stored them again), and 3-5 now at the latest.
    final = registry.gc(grace=60)
    assert set(gc_run["removed"]) | set(final.removed_objects) <= set(orphans.values())
    assert all(not registry.backend.objects.path(orphans[k]).exists() for k in (3, 4, 5))
    assert not list((root / "objects").glob(".*.part"))
    assert registry.verify().ok and registry.verify().checked_versions == 3 * PUSHES + 1 + 3
