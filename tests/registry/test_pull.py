"""Pull verifies the sha256 of what it writes and never leaves a half or wrong file."""

import hashlib
import os

import pytest

from kmot.errors import RegistryError
from kmot.registry import Registry


def push_two(registry, tmp_path):
    for i in (1, 2):
        artifact = tmp_path / f"model_{i}.tflite"
        artifact.write_bytes(f"weights {i}".encode() * 1000)
        registry.push(artifact, name="digits")
    return registry


@pytest.fixture
def registry(tmp_path):
    """A folder registry holding digits v1 and v2."""
    return push_two(Registry(tmp_path / "registry"), tmp_path)


@pytest.fixture
def pushed(any_registry, tmp_path):
    """The same, then on an MLflow server: for what every backend does alike."""
    return push_two(any_registry, tmp_path)


def leftovers(folder):
    return sorted(p.name for p in folder.rglob(".*.part"))


def test_pull_defaults_to_production_else_latest(pushed, tmp_path):
    assert pushed.pull("digits", dest=tmp_path / "a.bin").read_bytes().startswith(b"weights 2")
    pushed.promote("digits", 1)
    assert pushed.pull("digits", dest=tmp_path / "b.bin").read_bytes().startswith(b"weights 1")
    assert pushed.pull("digits", 2, dest=tmp_path / "c.bin").read_bytes().startswith(b"weights 2")


def test_pull_into_a_folder_uses_the_pushed_file_name(pushed, tmp_path):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    assert pushed.pull("digits", 1, dest=deploy) == deploy / "model_1.tflite"
    new = pushed.pull("digits", 2, dest=f"{tmp_path}/new/")     # a str ending in "/"
    assert new == tmp_path / "new" / "model_2.tflite"
    nested = pushed.pull("digits", 2, dest=tmp_path / "a" / "b" / "model.tflite")
    assert nested.read_bytes() == (tmp_path / "model_2.tflite").read_bytes()


def test_pull_replaces_an_existing_file(pushed, tmp_path):
    dest = tmp_path / "model.tflite"
    dest.write_bytes(b"old")
    pushed.pull("digits", 1, dest=dest)
    assert dest.read_bytes() == (tmp_path / "model_1.tflite").read_bytes()
    assert leftovers(tmp_path) == []


def test_a_corrupted_artifact_is_detected_on_pull(registry, tmp_path):
    version = registry.show("digits", 2)
    stored = registry.root / "objects" / version.sha256[:2] / version.sha256
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF                      # one flipped byte, same size
    stored.write_bytes(bytes(data))
    dest = tmp_path / "deploy" / "model.tflite"
    dest.parent.mkdir()
    dest.write_bytes(b"the model in service")

    with pytest.raises(RegistryError) as caught:
        registry.pull("digits", 2, dest=dest)
    message = str(caught.value)
    found = hashlib.sha256(bytes(data)).hexdigest()
    assert message.startswith("Checksum mismatch: the stored object of digits v2 is corrupted.")
    assert f"Expected sha256 {version.sha256} ({len(data)} bytes)" in message
    assert f"Received: sha256 {found} ({len(data)} bytes)" in message
    assert "pushing that file again rewrites the object" in message
    assert f"Nothing was written to {dest}" in message
    assert dest.read_bytes() == b"the model in service"      # untouched
    assert leftovers(tmp_path) == []
    assert registry.pull("digits", 1, dest=tmp_path / "v1.tflite").is_file()   # others still fine

    # Pushing the original again restores the shared object, so v2 pulls again.
    registry.push(tmp_path / "model_2.tflite", name="digits")
    restored = registry.pull("digits", 2, dest=dest).read_bytes()
    assert restored == (tmp_path / "model_2.tflite").read_bytes()


def test_a_truncated_or_missing_object_is_detected(registry, tmp_path):
    version = registry.show("digits", 1)
    stored = registry.root / "objects" / version.sha256[:2] / version.sha256
    stored.write_bytes(stored.read_bytes()[:10])
    with pytest.raises(RegistryError, match=r"Checksum mismatch.*digits v1.*Received: sha256 "
                       r"[0-9a-f]{64} \(10 bytes\)"):
        registry.pull("digits", 1, dest=tmp_path / "out.tflite")
    stored.unlink()
    with pytest.raises(RegistryError, match=r"The stored object of digits v1 is missing\. "
                       r"Expected .*objects.*Nothing was written\. Received: missing file"):
        registry.pull("digits", 1, dest=tmp_path / "out.tflite")
    assert not (tmp_path / "out.tflite").exists()


def test_pulled_files_get_ordinary_permissions(pushed, tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    old = os.umask(0o022)
    try:
        path = pushed.pull("digits", 1, dest=tmp_path / "m.tflite")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
