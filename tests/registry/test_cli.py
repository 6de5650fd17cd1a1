"""`kmot registry ...`: push, list, show, promote, rollback, history, pull; errors exit 2."""

import json

import pytest
from typer.testing import CliRunner

from kmot.cli import app
from kmot.registry import Registry

runner = CliRunner()


@pytest.fixture
def setup(tmp_path):
    for i in (1, 2):
        (tmp_path / f"model_{i}.tflite").write_bytes(f"weights {i}".encode() * 50)
    (tmp_path / "report.json").write_text(json.dumps({"accuracy": 0.97, "p50_ms": 0.4}))
    return tmp_path, ["--root", str(tmp_path / "registry")]


def kmot(*args):
    return runner.invoke(app, ["registry", *map(str, args)])


def test_push_promote_rollback_pull(setup):
    folder, root = setup
    result = kmot("push", folder / "model_1.tflite", "--name", "digits", "--report",
                  folder / "report.json", "--tag", "int8", "--meta", "git_sha=abc123", *root)
    assert result.exit_code == 0, result.output
    assert "pushed digits v1" in result.output
    result = kmot("push", folder / "model_2.tflite", "--name", "digits", "--promote", *root)
    assert result.exit_code == 0, result.output
    assert "pushed digits v2" in result.output and "(production)" in result.output

    assert "digits v1 is production" in kmot("promote", "digits", 1, *root).output
    assert "digits v2 is production" in kmot("promote", "digits", 2, *root).output
    result = kmot("rollback", "digits", *root)
    assert result.exit_code == 0, result.output
    assert "rolled back: digits v1 is production again" in result.output

    result = kmot("pull", "digits", "-o", folder / "deploy" / "model.tflite", *root)
    assert result.exit_code == 0, result.output
    assert "sha256 verified" in result.output
    pulled = (folder / "deploy" / "model.tflite").read_bytes()
    assert pulled == (folder / "model_1.tflite").read_bytes()
    result = kmot("pull", "digits", "--version", 2, "-o", folder / "deploy", *root)
    assert result.exit_code == 0, result.output
    assert (folder / "deploy" / "model_2.tflite").is_file()
    result = kmot("pull", "digits", "-o", f"{folder}/new/", *root)
    assert result.exit_code == 0, result.output
    assert (folder / "new" / "model_1.tflite").is_file()

    version = Registry(folder / "registry").show("digits", 1)
    assert version.tags == ("int8",) and version.metadata == {"git_sha": "abc123"}
    assert version.metrics == {"accuracy": 0.97, "p50_ms": 0.4}


def test_list_show_history_tables_and_json(setup):
    folder, root = setup
    kmot("push", folder / "model_1.tflite", "--name", "digits", "--report", folder / "report.json",
         *root)
    kmot("push", folder / "model_2.tflite", "--name", "digits", *root)
    kmot("promote", "digits", 1, *root)

    models = kmot("list", *root)
    assert models.exit_code == 0, models.output
    assert "digits" in models.output and "v1" in models.output and "v2" in models.output
    assert json.loads(kmot("list", "--json", *root).output) == [
        {"name": "digits", "num_versions": 2, "latest_version": 2, "production_version": 1,
         "updated_at": Registry(folder / "registry").show("digits", 2).created_at}]

    versions = kmot("list", "digits", *root)
    assert versions.exit_code == 0, versions.output
    assert "v1 *" in versions.output and "model_2.tflite" in versions.output
    rows = json.loads(kmot("list", "digits", "--json", *root).output)
    assert [(r["version"], r["production"]) for r in rows] == [(1, True), (2, False)]
    assert rows[0]["metrics"] == {"accuracy": 0.97, "p50_ms": 0.4}

    shown = kmot("show", "digits", *root)
    assert shown.exit_code == 0, shown.output
    assert "digits v1 (production)" in shown.output and "metric accuracy" in shown.output
    data = json.loads(kmot("show", "digits", 2, "--json", *root).output)
    assert (data["version"], data["source"], data["report"]) == (2, "model_2.tflite", None)

    history = kmot("history", "digits", "--json", *root)
    assert [e["action"] for e in json.loads(history.output)] == ["promote"]
    assert json.loads(history.output)[0]["metrics"] == {"accuracy": 0.97, "p50_ms": 0.4}
    shown = kmot("history", "digits", *root).output
    assert "promote" in shown and "accuracy=0.97" in shown  # each version's report


def test_errors_exit_2_with_the_message(setup):
    folder, root = setup
    result = kmot("push", folder / "missing.tflite", "--name", "digits", *root)
    assert result.exit_code == 2
    assert "error:" in result.output and "No such artifact file" in result.output
    result = kmot("push", folder / "model_1.tflite", "--name", "digits", "--meta", "novalue", *root)
    assert result.exit_code == 2 and "Expected --meta KEY=VALUE" in result.output
    result = kmot("push", folder / "model_1.tflite", "--name", "digits", "--report",
                  folder / "nope.json", *root)
    assert result.exit_code == 2 and "No such report file" in result.output
    assert Registry(folder / "registry").list() == []

    kmot("push", folder / "model_1.tflite", "--name", "digits", *root)
    result = kmot("show", "digit", *root)
    assert result.exit_code == 2 and "Unknown model name" in result.output
    result = kmot("promote", "digits", 5, *root)
    assert result.exit_code == 2 and "Expected a version from 1 to 1" in result.output
    result = kmot("rollback", "digits", *root)
    assert result.exit_code == 2 and "Nothing to roll back to" in result.output


def test_root_defaults_to_the_environment(setup, monkeypatch):
    folder, _ = setup
    monkeypatch.setenv("KMOT_REGISTRY", str(folder / "env-registry"))
    assert kmot("push", folder / "model_1.tflite", "--name", "digits").exit_code == 0
    assert [v.version for v in Registry(folder / "env-registry").list("digits")] == [1]


def test_pull_of_a_corrupted_artifact_fails_and_writes_nothing(setup, monkeypatch):
    folder, root = setup
    kmot("push", folder / "model_1.tflite", "--name", "digits", *root)
    version = Registry(folder / "registry").show("digits")
    (folder / "registry" / "objects" / version.sha256[:2] / version.sha256).write_bytes(b"junk")
    work = folder / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = kmot("pull", "digits", *root)               # default: into the current folder
    assert result.exit_code == 2
    assert "Checksum mismatch" in result.output and "digits v1" in result.output
    assert list(work.iterdir()) == []
