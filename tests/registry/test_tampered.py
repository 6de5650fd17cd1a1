"""An index edited outside kmot: every stored value is checked on read, as on write.

The index is a plain SQLite file; these tests edit it directly, as anyone with
access to the registry folder could, and check that nothing is read from or written
to a path built from a value kmot would never have stored.
"""

import sqlite3

import pytest
from typer.testing import CliRunner

from kmot.cli import app
from kmot.errors import RegistryError
from kmot.registry import Registry

runner = CliRunner()


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "registry")
    (tmp_path / "model.tflite").write_bytes(b"weights" * 500)
    registry.push(tmp_path / "model.tflite", name="digits")
    registry.push(tmp_path / "model.tflite", name="digits")
    return registry


def tamper(registry, sql, *params):
    conn = sqlite3.connect(registry.root / "index.sqlite")
    with conn:
        conn.execute(sql, params)
    conn.close()


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# A source that, joined to the destination folder, would leave it (or is no file name).
BAD_SOURCES = ["../escaped.tflite", "../../etc/cron.d/x", "/tmp/absolute.tflite", "sub/dir.tflite",
               "nul\0byte.tflite", "..", ".", "", "back\\slash.tflite", "C:evil.tflite",
               "x" * 256]


@pytest.mark.parametrize("source", BAD_SOURCES)
def test_a_tampered_source_never_reaches_a_path(registry, tmp_path, source):
    tamper(registry, "UPDATE versions SET source = ? WHERE version = 2", source)
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    before = files_under(tmp_path)
    with pytest.raises(RegistryError) as caught:
        registry.pull("digits", 2, dest=deploy)
    message = str(caught.value)
    assert message.startswith("The registry index holds a value kmot never writes: versions "
                              "row (name='digits', version=2) has source=")
    assert "expected a bare file name (no '/', '\\' or NUL, not '.' or '..', at most 255 " \
           "bytes)" in message
    assert "The index was modified outside kmot" in message
    assert "Restore index.sqlite from a backup or correct that row" in message
    assert files_under(tmp_path) == before                 # nothing written anywhere
    for read in (lambda: registry.show("digits", 2), lambda: registry.list("digits"),
                 registry.verify):
        with pytest.raises(RegistryError, match=r"versions row \(name='digits', version=2\) "
                           r"has source=.*modified outside kmot"):
            read()
    assert registry.pull("digits", 1, dest=deploy).name == "model.tflite"   # v1 is intact


def test_a_tampered_source_through_the_cli_exits_2_and_writes_nothing(registry, tmp_path):
    tamper(registry, "UPDATE versions SET source = '../escaped.tflite'")
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    result = runner.invoke(app, ["registry", "pull", "digits", "-o", str(deploy), "--root",
                                 str(registry.root)])
    assert result.exit_code == 2
    assert "error:" in result.output and "modified outside kmot" in result.output
    assert not (tmp_path / "escaped.tflite").exists() and list(deploy.iterdir()) == []


@pytest.mark.parametrize("digest", ["../../../../etc/passwd", "ABC", "0" * 63, "g" * 64, 12345])
def test_a_tampered_sha256_is_refused_and_gc_removes_nothing(registry, tmp_path, digest):
    stored = files_under(registry.root / "objects")
    tamper(registry, "UPDATE versions SET sha256 = ? WHERE version = 1", digest)
    with pytest.raises(RegistryError, match=r"versions row \(name='digits', version=1\) has "
                       r"sha256=.*expected a sha256 digest of 64 lowercase hex digits"):
        registry.pull("digits", 1, dest=tmp_path / "out.tflite")
    for call in (registry.verify, lambda: registry.gc(grace=0)):
        with pytest.raises(RegistryError, match=r"modified outside kmot"):
            call()
    assert files_under(registry.root / "objects") == stored
    assert not (tmp_path / "out.tflite").exists()


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("metrics", "{not json", "JSON as kmot writes it"),
    ("metrics", "[1]", "a JSON object"),
    ("metadata", "null", "a JSON object"),
    ("tags", '"int8"', "a JSON list"),
    ("tags", "[1]", "a JSON list of non-empty strings"),
    ("report", "3", "null or a JSON object"),
    ("size_bytes", -5, "an int >= 1"),
    ("version", 0, "an int >= 1"),
    ("name", "../x", "a model name of 1-128 letters"),
])
def test_other_tampered_values_name_the_row(registry, column, value, expected):
    tamper(registry, f"UPDATE versions SET {column} = ? WHERE version = 1", value)
    with pytest.raises(RegistryError, match=rf"versions row .* has {column}=.*expected "
                       rf"{expected}.*modified outside kmot"):
        registry.list()


def test_push_refuses_a_file_name_pull_could_not_write(tmp_path):
    artifact = tmp_path / "back\\slash.tflite"      # a path on Windows
    artifact.write_bytes(b"weights")
    with pytest.raises(RegistryError, match=r"Expected the artifact's file name to be a bare "
                       r"file name.*Rename the file before pushing it\. Received: source="):
        Registry(tmp_path / "registry").push(artifact, name="digits")
