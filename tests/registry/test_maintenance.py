"""`Registry.gc` / `kmot registry gc` and `Registry.verify` / `kmot registry verify`."""

import json
import os
import time

import pytest
from typer.testing import CliRunner

from kmot.cli import app
from kmot.errors import RegistryError
from kmot.registry import GcResult, Registry, VerifyProblem, VerifyResult
from kmot.registry import objects as object_store

runner = CliRunner()
HOUR = 3600


def kmot(*args):
    return runner.invoke(app, ["registry", *map(str, args)])


def age(path, seconds):
    """Sets the file's mtime ``seconds`` into the past."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "registry")
    for i in (1, 2):
        (tmp_path / f"model_{i}.tflite").write_bytes(f"weights {i}".encode() * 500)
        registry.push(tmp_path / f"model_{i}.tflite", name="digits")
    registry.push(tmp_path / "model_1.tflite", name="other")       # shares v1's object
    return registry


def orphan(registry, tmp_path, content):
    """An object a push stored before it was killed, so no version refers to it."""
    (tmp_path / "orphan.bin").write_bytes(content)
    digest, _ = registry.backend.objects.put(tmp_path / "orphan.bin")
    return digest


def partial(registry, name=".incoming.0123456789abcdef.part", folder=None):
    """A temporary file a killed write left behind."""
    path = (folder or registry.backend.objects.folder) / name
    path.write_bytes(b"half an artifact")
    return path


def stored(registry):
    return sorted(p.name for p in registry.backend.objects.folder.rglob("*") if p.is_file())


# -- verify -------------------------------------------------------------------------


def test_verify_a_sound_registry(registry):
    result = registry.verify()
    assert result == VerifyResult(checked_objects=2, checked_versions=3, checked_bytes=9000)
    assert result.ok and result.to_dict()["ok"] is True
    assert Registry(registry.root.parent / "missing").verify() == VerifyResult(0, 0, 0)
    cli = kmot("verify", "--root", registry.root)
    assert cli.exit_code == 0, cli.output
    assert "verified 2 objects (3 versions, 9,000 bytes read): every sha256 matches" in cli.output


def test_verify_lists_each_missing_or_corrupted_object_and_exits_1(registry):
    v1, v2 = registry.show("digits", 1), registry.show("digits", 2)
    registry.backend.objects.path(v1.sha256).write_bytes(b"junk")
    registry.backend.objects.path(v2.sha256).unlink()
    result = registry.verify()
    assert not result.ok and result.checked_objects == 2
    by_problem = {p.problem: p for p in result.problems}
    assert by_problem["mismatch"] == VerifyProblem(
        v1.sha256, 4500, "mismatch", ("digits v1", "other v1"), str(registry.backend.objects.path(
            v1.sha256)), found_sha256=by_problem["mismatch"].found_sha256, found_bytes=4)
    assert by_problem["missing"].versions == ("digits v2",)
    assert by_problem["missing"].found_sha256 is None

    cli = kmot("verify", "--root", registry.root)
    assert cli.exit_code == 1
    assert f"MISMATCH digits v1, other v1: expected sha256 {v1.sha256} (4,500 bytes)" in cli.output
    assert f"MISSING digits v2: expected sha256 {v2.sha256}" in cli.output
    assert "2 of 2 objects failed verification" in cli.output
    data = json.loads(kmot("verify", "--json", "--root", registry.root).output)
    assert data["ok"] is False and len(data["problems"]) == 2
    assert sorted(p["problem"] for p in data["problems"]) == ["mismatch", "missing"]


def test_verify_catches_a_same_size_flipped_byte(registry):
    v2 = registry.show("digits", 2)
    path = registry.backend.objects.path(v2.sha256)
    data = bytearray(path.read_bytes())
    data[7] ^= 1
    path.write_bytes(bytes(data))
    (problem,) = registry.verify().problems
    assert (problem.problem, problem.found_bytes, problem.size_bytes) == ("mismatch", 4500, 4500)


# -- gc -------------------------------------------------------------------------------


def test_gc_removes_old_unreferenced_objects_and_partial_files_only(registry, tmp_path):
    keep = stored(registry)
    old_orphan = orphan(registry, tmp_path, b"killed push" * 100)
    age(registry.backend.objects.path(old_orphan), 2 * HOUR)
    young_orphan = orphan(registry, tmp_path, b"push in progress" * 100)
    old_part = partial(registry)
    age(old_part, 2 * HOUR)
    shard_part = partial(registry, ".x.part", registry.backend.objects.path(old_orphan).parent)
    age(shard_part, 2 * HOUR)
    young_part = partial(registry, ".incoming.fedcba9876543210.part")
    for path in registry.backend.objects.folder.rglob("*"):
        if path.is_file() and path.name in keep:
            age(path, 10 * HOUR)                     # old, but referenced: always kept
    unknown = registry.backend.objects.folder / "notes.txt"
    unknown.write_text("not kmot's")
    age(unknown, 10 * HOUR)

    dry = registry.gc(dry_run=True)
    assert dry == GcResult((old_orphan,), ("objects/.incoming.0123456789abcdef.part",
                                          f"objects/{old_orphan[:2]}/.x.part"),
                           freed_bytes=1100 + 2 * 16, kept_recent=2, referenced_objects=2,
                           grace_s=3600.0, dry_run=True)
    assert old_part.exists() and registry.backend.objects.path(old_orphan).exists()

    done = registry.gc()
    assert done == GcResult(dry.removed_objects, dry.removed_partials, dry.freed_bytes, 2, 2,
                            3600.0, False)
    assert stored(registry) == sorted([*keep, young_orphan, young_part.name, "notes.txt"])
    assert registry.verify().ok
    assert registry.gc(grace=0).removed_objects == (young_orphan,)
    assert stored(registry) == sorted([*keep, "notes.txt"])
    for version in registry.list():
        registry.pull(version.name, version.version, dest=tmp_path / "out.bin")


def test_gc_cli_grace_dry_run_and_json(registry, tmp_path):
    digest = orphan(registry, tmp_path, b"killed push" * 100)
    age(registry.backend.objects.path(digest), 45 * 60)
    root = ["--root", registry.root]
    kept = kmot("gc", *root)                                   # default grace: 1 hour
    assert kept.exit_code == 0, kept.output
    assert "removed 0 unreferenced objects and 0 partial files (0 bytes); kept 2 referenced " \
           "objects and 1 file younger than 1h" in kept.output
    dry = kmot("gc", "--grace", "30m", "--dry-run", *root)
    assert dry.exit_code == 0, dry.output
    assert f"would remove object {digest}" in dry.output
    assert registry.backend.objects.path(digest).exists()
    data = json.loads(kmot("gc", "--grace", "1800s", "--json", *root).output)
    assert data["removed_objects"] == [digest] and data["freed_bytes"] == 1100
    assert data["grace_s"] == 1800.0 and data["dry_run"] is False
    assert not registry.backend.objects.path(digest).exists()
    for grace, seconds in (("0", 0.0), ("90", 90.0), ("1.5h", 5400.0), ("2M", 120.0)):
        result = json.loads(kmot("gc", "--grace", grace, "--json", *root).output)
        assert result["grace_s"] == seconds


@pytest.mark.parametrize("grace", ["-1", "1x", "m", "1h30m", ""])
def test_gc_cli_refuses_a_bad_grace(registry, grace):
    result = kmot("gc", "--grace", grace, "--root", registry.root)
    assert result.exit_code == 2
    assert "Expected --grace as a duration: seconds (3600 or 90s), minutes (30m) or hours (1h)" \
        in result.output


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), True, "1h", None])
def test_gc_refuses_a_bad_grace(registry, grace):
    with pytest.raises(RegistryError, match=r"Expected `grace=` in seconds: a finite number "
                       r">= 0.*Received: grace="):
        registry.gc(grace=grace)


def test_gc_of_a_missing_registry_creates_nothing(tmp_path):
    registry = Registry(tmp_path / "nothing")
    assert registry.gc(grace=0) == GcResult((), (), 0, 0, 0, 0.0, False)
    assert not registry.root.exists()


def test_gc_removes_objects_of_pushes_that_never_committed_a_row(tmp_path):
    """Every push was killed before its first row: there is no index, only objects."""
    registry = Registry(tmp_path / "registry")
    digest = orphan(registry, tmp_path, b"first push, killed")
    assert registry.gc(grace=0).removed_objects == (digest,)
    assert stored(registry) == [] and not registry.backend.index_path.exists()


# -- push against a concurrent gc ------------------------------------------------------


def test_push_stores_its_object_again_if_gc_removed_it_before_the_row(
        registry, tmp_path, monkeypatch):
    """gc may delete an unreferenced object between push's copy and its commit (only with
    a grace shorter than that gap): push notices under the lock and copies again."""
    put = registry.backend.objects.put
    calls = []

    def put_then_gc(src):
        digest, size = put(src)
        calls.append(digest)
        if len(calls) == 1:
            assert registry.gc(grace=0).removed_objects == (digest,)
        return digest, size

    monkeypatch.setattr(registry.backend.objects, "put", put_then_gc)
    (tmp_path / "new.tflite").write_bytes(b"brand new weights" * 100)
    version = registry.push(tmp_path / "new.tflite", name="digits")
    assert len(calls) == 2 and version.version == 3
    assert registry.pull("digits", 3, dest=tmp_path / "out.tflite").read_bytes() == \
        (tmp_path / "new.tflite").read_bytes()
    assert registry.verify().ok


def test_push_copies_again_if_gc_removed_its_partial_file(registry, tmp_path, monkeypatch):
    write_temp = object_store.write_temp
    calls = []

    def write_then_gc(src, folder, stem):
        tmp, digest, size = write_temp(src, folder, stem)
        calls.append(tmp)
        if len(calls) == 1:
            assert registry.gc(grace=0).removed_partials == (f"objects/{tmp.name}",)
        return tmp, digest, size

    monkeypatch.setattr(object_store, "write_temp", write_then_gc)
    (tmp_path / "new.tflite").write_bytes(b"brand new weights" * 100)
    assert registry.push(tmp_path / "new.tflite", name="digits").version == 3
    assert len(calls) == 2 and registry.verify().ok


def test_push_gives_up_if_its_object_keeps_disappearing(registry, tmp_path, monkeypatch):
    put = registry.backend.objects.put

    def put_then_delete(src):
        digest, size = put(src)
        registry.backend.objects.path(digest).unlink()
        return digest, size

    monkeypatch.setattr(registry.backend.objects, "put", put_then_delete)
    (tmp_path / "new.tflite").write_bytes(b"brand new weights" * 100)
    with pytest.raises(RegistryError, match=r"The stored copy of the artifact was removed 3 "
                       r"times before its version could be recorded.*not grace=0.*Nothing was "
                       r"recorded"):
        registry.push(tmp_path / "new.tflite", name="digits")
    assert [v.version for v in registry.list("digits")] == [1, 2]
