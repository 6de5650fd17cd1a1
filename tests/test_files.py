"""kmot._files: whole-or-nothing writes, the umask's permissions, stale parts swept."""

import os
import stat
import time

import numpy as np
import pytest

from kmot._files import atomic_path, copy_atomically, write_atomic


def _part(folder, name, age_s):
    part = folder / f".{name}.{age_s:016x}.part"
    part.write_bytes(b"half")
    os.utime(part, (time.time() - age_s, time.time() - age_s))
    return part


@pytest.mark.parametrize("how", ["write", "copy", "path"])
def test_a_write_removes_stale_parts_of_its_name_and_keeps_fresh_and_other_ones(tmp_path, how):
    stale = _part(tmp_path, "model.tflite", 7200)
    fresh = _part(tmp_path, "model.tflite", 10)
    other = _part(tmp_path, "other.tflite", 7200)
    target = tmp_path / "model.tflite"
    if how == "write":
        write_atomic(target, b"new")
    elif how == "copy":
        (tmp_path / "src.bin").write_bytes(b"new")
        copy_atomically(tmp_path / "src.bin", target)
    else:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert not stale.exists() and fresh.exists() and other.exists()


def test_files_get_the_umask_permissions_and_a_failed_write_leaves_nothing(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a", b"x")
        with atomic_path(tmp_path / "b") as tmp:
            tmp.write_bytes(b"y")
            os.chmod(tmp, 0o600)          # a writer that picks its own mode
    finally:
        os.umask(old)
    for name in ("a", "b"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "c") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_tflite_files_and_reports_get_the_umask_permissions(tmp_path):
    """They were written 0600 whatever the umask (tempfile.mkstemp)."""
    import keras

    from kmot.export import to_litert

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    old = os.umask(0o022)
    try:
        to_litert(model, tmp_path / "m.tflite")
        from kmot.evaluate import compare

        x = np.random.default_rng(0).random((8, 3)).astype("float32")
        paths = compare({"m": tmp_path / "m.tflite"}, data=(x, np.zeros(8, int)), runs=2,
                        warmup=1, memory=False).save(tmp_path / "report")
    finally:
        os.umask(old)
    for path in (tmp_path / "m.tflite", *paths.values()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
