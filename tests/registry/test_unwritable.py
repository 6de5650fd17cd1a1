"""Registries and destinations that cannot be written: a clear error, nothing half-made.

A read-only registry (a shared folder, another user's) is still listed, shown,
verified and pulled from; the writes are refused with `RegistryError`. How the
folder is made read-only depends on who runs the tests: ``chmod`` for an ordinary
user; as root, whom permission bits do not stop, ``chattr +i`` (immutable), else the
commands run as user ``nobody``. The tests that need no read-only folder (a registry
whose ``objects`` is a file, a pull under a regular file) run everywhere.
"""

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from faults import CLI, cli_env
from typer.testing import CliRunner

from kmot.cli import app
from kmot.errors import RegistryError
from kmot.registry import Registry

runner = CliRunner()
NOBODY = 65534


def kmot(*args):
    return runner.invoke(app, ["registry", *map(str, args)])


def tree(folder):
    """Every path under ``folder`` with its size and mtime: any change shows."""
    return {str(p.relative_to(folder)): (p.is_file() and p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def shared(tmp_path):
    """A folder every user can reach (pytest's own is private to root when run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="kmot-ro-"))
    folder.chmod(0o755)
    yield folder
    _chattr(folder, "-i")
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            path.chmod(stat.S_IMODE(path.lstat().st_mode) | stat.S_IWUSR)
    shutil.rmtree(folder, ignore_errors=True)


def _chattr(folder, flag):
    try:
        done = subprocess.run(["chattr", "-R", flag, str(folder)], capture_output=True,
                              check=False)
    except FileNotFoundError:
        return False
    return done.returncode == 0


def _writes_blocked(folder):
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        return True
    (folder / "probe").unlink()
    return False


def _nobody_can_run_kmot(folder):
    try:
        done = subprocess.run([*CLI, "--help"], check=False, capture_output=True, user=NOBODY,
                              group=NOBODY, extra_groups=[], cwd=folder,
                              env=cli_env(HOME=str(folder)), timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def read_only(root, work):
    """Makes ``root`` read-only for the commands run by the yielded ``run(args)``.

    ``work`` stays writable by them (pull destinations go there).
    """
    user = None
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        for path in [root, *root.rglob("*")]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        how = "chmod a-w"
    elif _chattr(root, "+i") and _writes_blocked(root):
        how = "chattr +i"
    elif _nobody_can_run_kmot(work):
        _chattr(root, "-i")
        work.chmod(0o777)
        user, how = NOBODY, "run as nobody"
    else:
        _chattr(root, "-i")
        pytest.skip("Cannot make a folder read-only for root here: chattr +i is refused (no "
                    "CAP_LINUX_IMMUTABLE) and user nobody cannot run this Python. Run the "
                    "tests as an ordinary user to include this check.")

    def run(args):
        extra = {} if user is None else {"user": user, "group": user, "extra_groups": []}
        return subprocess.run([*CLI, "registry", *map(str, args), "--root", str(root)],
                              check=False, capture_output=True, text=True, cwd=work,
                              env=cli_env(HOME=str(work)), timeout=120, **extra)

    try:
        yield run, how
    finally:
        _chattr(root, "-i")
        for path in [root, *root.rglob("*")]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)


def test_a_read_only_registry_is_read_and_pulled_from_and_refuses_writes(shared):
    root, work = shared / "registry", shared / "work"
    work.mkdir()
    artifact = work / "model.tflite"
    artifact.write_bytes(b"weights" * 1000)
    registry = Registry(root)
    registry.push(artifact, name="digits")
    registry.promote("digits", 1)
    before = tree(root)

    with read_only(root, work) as (run, how):
        listed = run(["list", "--json"])
        assert listed.returncode == 0, (how, listed.stderr)
        assert [m["name"] for m in json.loads(listed.stdout)] == ["digits"]
        for args in (["list", "digits"], ["show", "digits"], ["history", "digits"],
                     ["verify"], ["gc", "--dry-run"]):
            done = run(args)
            assert done.returncode == 0, (how, args, done.stdout, done.stderr)
        pulled = run(["pull", "digits", "-o", work / "deploy" / "model.tflite"])
        assert pulled.returncode == 0, (how, pulled.stderr)
        assert (work / "deploy" / "model.tflite").read_bytes() == artifact.read_bytes()

        for args in (["push", artifact, "--name", "digits"], ["promote", "digits", "1"],
                     ["rollback", "digits"], ["gc"]):
            done = run(args)
            assert done.returncode == 2, (how, args, done.stdout, done.stderr)
            assert "Traceback" not in done.stderr
            assert "error: Cannot write to the registry at" in done.stdout + done.stderr, \
                (how, args, done.stdout, done.stderr)
        assert tree(root) == before, how          # nothing created, nothing changed
    assert [v.version for v in registry.list("digits")] == [1]


def test_a_push_into_a_registry_whose_objects_folder_is_a_file(tmp_path):
    root = tmp_path / "registry"
    root.mkdir()
    (root / "objects").write_text("not a folder")
    (tmp_path / "model.tflite").write_bytes(b"weights")
    result = kmot("push", tmp_path / "model.tflite", "--name", "digits", "--root", root)
    assert result.exit_code == 2, result.output
    assert "error: Cannot write to the registry at" in result.output
    assert "Received: [Errno" in result.output and "objects" in result.output
    with pytest.raises(RegistryError, match=r"Cannot write to the registry at .*Check the "
                       r"folder's owner and permissions"):
        Registry(root).push(tmp_path / "model.tflite", name="digits")
    assert not (root / "index.sqlite").exists()


def test_an_index_that_is_a_folder_is_refused_on_read_and_write(tmp_path):
    root = tmp_path / "registry"
    (root / "index.sqlite").mkdir(parents=True)
    (tmp_path / "model.tflite").write_bytes(b"weights")
    registry = Registry(root)
    for call in (registry.list, registry.models, registry.verify,
                 lambda: registry.push(tmp_path / "model.tflite", name="digits")):
        with pytest.raises(RegistryError, match=r"Cannot use the registry index\. Expected "
                           r"index\.sqlite to be the SQLite file kmot writes.*is not a file"):
            call()


@pytest.mark.parametrize("dest", ["blocker/sub/", "blocker/sub/model.tflite", "blocker/x"])
def test_a_pull_under_a_regular_file_is_refused_and_creates_nothing(tmp_path, dest):
    (tmp_path / "model.tflite").write_bytes(b"weights")
    root = tmp_path / "registry"
    Registry(root).push(tmp_path / "model.tflite", name="digits")
    work = tmp_path / "work"
    work.mkdir()
    (work / "blocker").write_text("a file")
    before = tree(work)
    result = kmot("pull", "digits", "-o", f"{work}/{dest}", "--root", root)
    assert result.exit_code == 2, result.output
    assert f"{work / 'blocker'} is a file, not a folder" in result.output
    assert "Nothing was written" in result.output
    assert tree(work) == before


def test_a_pull_onto_a_folder_in_the_way_is_refused(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"weights")
    root = tmp_path / "registry"
    Registry(root).push(tmp_path / "model.tflite", name="digits")
    (tmp_path / "deploy" / "model.tflite" / "inside").mkdir(parents=True)   # where it would go
    with pytest.raises(RegistryError, match=r"Cannot write the pulled file\. Expected `dest` "
                       r"\(-o\) to be a file path.*Nothing was written\. Received: dest="):
        Registry(root).pull("digits", dest=tmp_path / "deploy")
    assert [p.name for p in (tmp_path / "deploy").rglob("*")] == ["model.tflite", "inside"]


def test_a_refused_pull_creates_no_folder(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"weights" * 100)
    registry = Registry(tmp_path / "registry")
    version = registry.push(tmp_path / "model.tflite", name="digits")
    registry.backend.objects.path(version.sha256).write_bytes(b"corrupted")
    for dest in (tmp_path / "new" / "deeper" / "model.tflite", f"{tmp_path}/fresh/"):
        with pytest.raises(RegistryError, match=r"Checksum mismatch"):
            registry.pull("digits", dest=dest)
    assert not (tmp_path / "new").exists() and not (tmp_path / "fresh").exists()
    result = kmot("pull", "digits", "-o", f"{tmp_path}/cli/sub/", "--root", registry.root)
    assert result.exit_code == 2 and "Checksum mismatch" in result.output
    assert not (tmp_path / "cli").exists()


def test_an_artifact_that_cannot_be_read_is_named_as_such(tmp_path, monkeypatch):
    """The artifact vanishes between the check and the copy (a real race with a build
    step): the error is about the artifact, not about the registry's permissions."""
    from kmot.registry import store

    check = store.check_artifact

    def check_then_vanish(path):
        artifact = check(path)
        artifact.unlink()
        return artifact

    monkeypatch.setattr(store, "check_artifact", check_then_vanish)
    (tmp_path / "model.tflite").write_bytes(b"weights")
    registry = Registry(tmp_path / "registry")
    with pytest.raises(RegistryError, match=r"Cannot read the artifact\. Expected a file this "
                       r"user can read; check its permissions\. Received: .*model\.tflite"):
        registry.push(tmp_path / "model.tflite", name="digits")
    assert registry.list() == []
    assert not list((tmp_path / "registry" / "objects").glob(".*.part"))


def test_a_stored_object_that_cannot_be_read_is_named_as_such(tmp_path, monkeypatch):
    """What the OS answers when the registry's files belong to a user we cannot read as."""
    from kmot.registry import objects

    (tmp_path / "model.tflite").write_bytes(b"weights")
    registry = Registry(tmp_path / "registry")
    version = registry.push(tmp_path / "model.tflite", name="digits")
    stored = registry.backend.objects.path(version.sha256)

    def refuse(src, dest, **kwargs):
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(objects, "copy_atomically", refuse)
    with pytest.raises(RegistryError, match=rf"Cannot read the stored object {stored}\. Expected "
                       r"the registry's files to be readable by this user"):
        registry.pull("digits", dest=tmp_path / "new" / "model.tflite")
    assert not (tmp_path / "new").exists()


def test_a_push_its_index_refuses_stores_no_object(tmp_path):
    """The index is checked before the copy: a refused push leaves no unreferenced file."""
    import sqlite3

    (tmp_path / "model.tflite").write_bytes(b"weights")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "index.sqlite").write_bytes(b"not a database" * 300)
    with pytest.raises(RegistryError, match=r"Cannot use the registry index.*file is not a "
                       r"database"):
        Registry(junk).push(tmp_path / "model.tflite", name="digits")
    assert sorted(p.name for p in junk.iterdir()) == ["index.sqlite"]

    newer = Registry(tmp_path / "newer")
    (tmp_path / "first.tflite").write_bytes(b"first")
    newer.push(tmp_path / "first.tflite", name="digits")
    conn = sqlite3.connect(newer.backend.index_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = tree(newer.root / "objects")
    with pytest.raises(RegistryError, match=r"written by a newer kmot"):
        newer.push(tmp_path / "model.tflite", name="digits")
    assert tree(newer.root / "objects") == before
