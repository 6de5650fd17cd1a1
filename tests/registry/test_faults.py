"""kill -9 during `kmot registry push`, `pull` and `promote`, at seeded points.

Each command is first timed, then started again and killed at seeded offsets:
``SPAN_KILLS`` drawn from its whole lifetime (interpreter start-up included: a kill
may land anywhere), and ``WORK_KILLS`` from the part after start-up, where the
command copies and commits (start-up is timed with a command that does nothing).
After every kill the registry must still be what it was before (or
what the command would have made of it, if the kill came after its commit): every
listed version verifies and pulls, a pulled file is absent, the old one, or the new
one whole, and the same command then succeeds. Replay a failure with the seed and
offset in its message.
"""

import contextlib
import hashlib
import os
import shutil

import pytest
from faults import COUNTS, kill_points, run_cli, run_killed, timed_run

from kmot.registry import Registry

SPAN_KILLS, WORK_KILLS = 4, 6
SEEDS = {"push": 1301, "pull": 1302, "promote": 1303}
ARTIFACT_BYTES = 24 << 20          # big enough that copying it takes a measurable time


@pytest.fixture(scope="module")
def startup(tmp_path_factory):
    """Seconds a registry command takes to start and exit having done nothing (best of 3)."""
    empty = tmp_path_factory.mktemp("empty") / "registry"
    runs = [timed_run(["registry", "list", "--root", empty]) for _ in range(3)]
    assert all(result.returncode == 0 for result, _ in runs), runs
    return min(seconds for _, seconds in runs)


def points(command, duration, startup):
    # On a loaded machine one timing can be off: keep the work window non-empty.
    seed, start = SEEDS[command], min(startup, 0.8 * duration)
    return sorted(kill_points(seed, SPAN_KILLS, duration)
                  + kill_points(seed + 100, WORK_KILLS, duration, start=start))


@contextlib.contextmanager
def checking(what):
    """Counts a failed post-kill check in COUNTS["failures"], then fails the test."""
    try:
        yield
    except AssertionError as err:
        COUNTS["failures"] += 1
        raise AssertionError(f"{what}: {err}") from None


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state(registry):
    """What a kill must not damage: the versions, production and history of every model."""
    return ([(v.name, v.version, v.sha256, v.production) for v in registry.list()],
            {m.name: [(e.action, e.version) for e in registry.history(m.name)]
             for m in registry.models()})


def assert_sound(registry):
    result = registry.verify()
    assert result.ok, result.problems
    assert result.checked_versions == len(registry.list())


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """One artifact of random bytes; `stamp` makes each use of it a new content."""
    path = tmp_path_factory.mktemp("artifact") / "model.tflite"
    path.write_bytes(os.urandom(ARTIFACT_BYTES))
    return path


def stamp(path, n):
    with open(path, "r+b") as f:
        f.write(n.to_bytes(8, "little"))


def test_push_killed_anywhere_leaves_the_previous_versions(tmp_path, big, startup):
    root = tmp_path / "registry"
    registry = Registry(root)
    artifact = tmp_path / "model.tflite"
    shutil.copyfile(big, artifact)
    args = ["registry", "push", artifact, "--name", "digits", "--root", root]
    stamp(artifact, 0)
    first, duration = timed_run(args)
    assert first.returncode == 0, first.stderr
    offsets = points("push", duration, startup)

    for n, delay in enumerate(offsets, start=1):
        stamp(artifact, n)
        before = state(registry)[0]
        killed = run_killed(args, delay)
        with checking(f"push killed at {delay:.3f}s (seed {SEEDS['push']}, kill {n})"):
            after = state(registry)[0]
            # The kill came before the commit (nothing changed) or after it (one more
            # version, holding exactly the pushed bytes).
            assert after in (before, [*before, ("digits", len(before) + 1, sha256(artifact),
                                                False)]), (killed, after[len(before):])
            assert_sound(registry)
            rerun = run_cli(args)
            assert rerun.returncode == 0, rerun.stderr
            assert [v.version for v in registry.list("digits")] == list(range(1, len(after) + 2))
            assert registry.show("digits").sha256 == sha256(artifact)

    with checking("gc after the killed pushes"):
        kept = state(registry)
        cleaned = registry.gc(grace=0)       # nobody else pushes: take every leftover
        assert state(registry) == kept
        assert_sound(registry)
        leftovers = [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".part")]
        assert leftovers == [] and registry.gc(grace=0).removed_objects == ()
        referenced = {v.sha256 for v in registry.list()}
        assert {p.name for p in (root / "objects").rglob("*") if p.is_file()} == referenced
        assert len(cleaned.removed_objects) <= len(offsets)


def test_pull_killed_anywhere_leaves_the_old_file_or_the_new_one(tmp_path, big, startup):
    root = tmp_path / "registry"
    registry = Registry(root)
    artifact = tmp_path / "model.tflite"
    shutil.copyfile(big, artifact)
    stamp(artifact, 1)
    old = registry.push(artifact, name="digits")
    stamp(artifact, 2)
    new = registry.push(artifact, name="digits")
    deploy = tmp_path / "deploy"
    served = deploy / "model.tflite"
    registry.pull("digits", old.version, dest=served)            # what is in service
    kept = state(registry)

    args = ["registry", "pull", "digits", "--version", new.version, "--root", root]
    first, duration = timed_run([*args, "-o", tmp_path / "timed.tflite"])
    assert first.returncode == 0, first.stderr
    offsets = points("pull", duration, startup)

    for n, delay in enumerate(offsets, start=1):
        # Odd kills pull over the file in service; even ones into folders not made yet.
        fresh = tmp_path / f"fresh-{n}" / "sub"
        target = served if n % 2 else fresh / "model.tflite"
        dest = served if n % 2 else f"{fresh}/"
        killed = run_killed([*args, "-o", dest], delay)
        with checking(f"pull killed at {delay:.3f}s (seed {SEEDS['pull']}, kill {n})"):
            assert state(registry) == kept
            if target.exists():
                assert sha256(target) in (old.sha256, new.sha256) if n % 2 else \
                    sha256(target) == new.sha256, killed
            else:
                assert not n % 2
            # Besides the file itself, only the dot-named temporary file of a killed copy.
            others = [p.name for p in target.parent.glob("*") if p != target] \
                if target.parent.exists() else []
            assert all(name.startswith(f".{target.name}.") and name.endswith(".part")
                       for name in others), others
            rerun = run_cli([*args, "-o", dest])
            assert rerun.returncode == 0, rerun.stderr
            assert sha256(target) == new.sha256
        if n % 2:
            registry.pull("digits", old.version, dest=served)    # back in service for the next
    with checking("the registry after the killed pulls"):
        assert_sound(registry)


def test_promote_killed_anywhere_moves_production_whole_or_not_at_all(tmp_path, startup):
    root = tmp_path / "registry"
    registry = Registry(root)
    for i in (1, 2, 3):
        (tmp_path / f"model_{i}.tflite").write_bytes(f"weights {i}".encode() * 1000)
        registry.push(tmp_path / f"model_{i}.tflite", name="digits")
    registry.promote("digits", 1)
    first, duration = timed_run(["registry", "promote", "digits", 2, "--root", root])
    assert first.returncode == 0, first.stderr
    offsets = points("promote", duration, startup)

    for n, delay in enumerate(offsets, start=1):
        current = registry.current("digits").version
        target = current % 3 + 1                       # always a different version
        before_history = state(registry)[1]["digits"]
        args = ["registry", "promote", "digits", target, "--root", root]
        killed = run_killed(args, delay)
        with checking(f"promote killed at {delay:.3f}s (seed {SEEDS['promote']}, kill {n})"):
            production = registry.current("digits").version
            history = state(registry)[1]["digits"]
            if production == current:
                assert history == before_history, killed
            else:                                      # committed just before the kill
                assert production == target and history == [*before_history,
                                                            ("promote", target)]
            assert [v.production for v in registry.list("digits")] == \
                [v == production for v in (1, 2, 3)]
            rerun = run_cli(args)
            assert rerun.returncode == 0, rerun.stderr
            assert registry.current("digits").version == target
            assert registry.rollback("digits").version in (1, 2, 3)     # the stack still works
            registry.promote("digits", target)
    with checking("the registry after the killed promotes"):
        assert_sound(registry)
