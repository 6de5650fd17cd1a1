"""Two processes pushing to one registry at once: distinct versions, nothing lost."""

import hashlib
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
