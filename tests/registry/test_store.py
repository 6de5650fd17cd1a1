"""Pushing, listing and showing versions; every input error names what was expected.

Tests taking `any_registry` run on a folder registry and on an MLflow server.
"""

import hashlib
import json
import re

import pytest

from kmot.errors import RegistryError
from kmot.registry import ModelVersion, RegisteredModel, Registry, default_root


@pytest.fixture
def artifacts(tmp_path):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    for stem, content in {"a": b"model a" * 100, "b": b"model b" * 100, "c": b"model c"}.items():
        (folder / f"{stem}.tflite").write_bytes(content)
    return folder


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "registry")


def test_push_numbers_versions_and_records_the_artifact(registry, artifacts):
    first = registry.push(artifacts / "a.tflite", name="digits")
    second = registry.push(artifacts / "b.tflite", name="digits")
    other = registry.push(artifacts / "c.tflite", name="other")
    content = (artifacts / "a.tflite").read_bytes()
    assert isinstance(first, ModelVersion)
    assert (first.name, first.version, second.version, other.version) == ("digits", 1, 2, 1)
    assert first.sha256 == hashlib.sha256(content).hexdigest()
    assert first.size_bytes == len(content)
    assert first.source == "a.tflite"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", first.created_at)
    assert first.report is None and first.metrics == {} and not first.production
    stored = registry.root / "objects" / first.sha256[:2] / first.sha256
    assert stored.read_bytes() == content
    assert (registry.root / "index.sqlite").is_file()
    assert registry.show("digits", 1) == first and len({first, registry.show("digits", 1)}) == 1


def test_identical_artifacts_are_stored_once(registry, artifacts, tmp_path):
    copy = tmp_path / "copy.tflite"
    copy.write_bytes((artifacts / "a.tflite").read_bytes())
    one = registry.push(artifacts / "a.tflite", name="digits")
    two = registry.push(copy, name="digits")
    three = registry.push(copy, name="elsewhere")
    assert one.sha256 == two.sha256 == three.sha256
    assert (two.version, two.source) == (2, "copy.tflite")
    objects = [p for p in (registry.root / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1


def test_list_show_and_models(any_registry, artifacts):
    registry = any_registry
    registry.push(artifacts / "a.tflite", name="digits", tags=["int8", "int8", "pruned"],
                  metadata={"git_sha": "abc123", "epochs": 5})
    registry.push(artifacts / "b.tflite", name="digits")
    registry.push(artifacts / "c.tflite", name="audio")
    assert [(v.name, v.version) for v in registry.list()] == [
        ("audio", 1), ("digits", 1), ("digits", 2)]
    assert [v.version for v in registry.list("digits")] == [1, 2]
    shown = registry.show("digits", 1)
    assert shown.tags == ("int8", "pruned")
    assert shown.metadata == {"git_sha": "abc123", "epochs": 5}
    assert registry.show("digits").version == 2          # no production yet: the latest
    registry.promote("digits", 1)
    assert registry.show("digits").version == 1          # production wins over latest
    assert [v.production for v in registry.list("digits")] == [True, False]
    assert registry.models() == [
        RegisteredModel("audio", 1, 1, None, registry.show("audio").created_at),
        RegisteredModel("digits", 2, 2, 1, registry.show("digits", 2).created_at),
    ]
    data = shown.to_dict()
    assert data["tags"] == ["int8", "pruned"] and json.loads(json.dumps(data)) == data


def test_report_from_a_dict_a_file_and_a_folder(any_registry, artifacts, tmp_path):
    registry = any_registry
    v1 = registry.push(artifacts / "a.tflite", name="m",
                       report={"accuracy": 0.97, "p50_ms": 1.5, "dataset": "digits", "ok": True})
    assert v1.report == {"accuracy": 0.97, "p50_ms": 1.5, "dataset": "digits", "ok": True}
    assert v1.metrics == {"accuracy": 0.97, "p50_ms": 1.5}
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps({"accuracy": 0.9}))
    assert registry.push(artifacts / "a.tflite", name="m", report=folder / "report.json").metrics \
        == {"accuracy": 0.9}
    from_folder = registry.push(artifacts / "a.tflite", name="m", report=folder)
    assert from_folder.metrics == {"accuracy": 0.9}
    assert registry.show("m", 3).report == {"accuracy": 0.9}


def _candidate(name, source, nbytes, accuracy, delta, p50):
    return {
        "name": name, "kind": "tflite", "source": source,
        "metrics": {"accuracy": accuracy}, "metric_deltas": {"accuracy": delta},
        "fidelity": None if name == "baseline" else
        {"argmax_agreement": 0.99, "output_rmse": 0.1, "kl_divergence": 0.01},
        "latency": {"p50_ms": p50, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5, "mean_ms": p50,
                    "std_ms": 0.01, "min_ms": p50 * 0.9, "max_ms": p50 * 2, "samples_ms": [p50]},
        "latency_ratio": 1.0, "memory": None, "size": {"bytes": nbytes, "gzip_bytes": nbytes // 2},
        "ops": None, "input_dtypes": ["float32"], "output_dtypes": ["float32"], "notes": [],
    }


def kmot_report(artifacts):
    """A report.json as `kmot.evaluate` writes it: three candidates, one is the pushed file."""
    from kmot.evaluate import Report

    data = {
        "schema_version": "1.0", "kmot_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
        "environment": {}, "settings": {"runs": 1, "warmup": 0, "threads": 1, "batch_size": 1,
                                        "num_samples": 10, "memory": False},
        "baseline": "baseline", "primary_metric": "accuracy",
        "metrics": [{"name": "accuracy", "higher_is_better": True}],
        "candidates": [
            _candidate("baseline", "/x/base.tflite", 4000, 0.98, 0.0, 1.0),
            _candidate("int8", str(artifacts / "a.tflite"), 700, 0.97, -0.01, 0.5),
            _candidate("pruned", "/x/pruned.tflite", 800, 0.96, -0.02, 0.9),
        ],
    }
    Report.from_dict(data)   # the fixture is a valid report, not a guess at one
    return data


def test_a_kmot_report_is_summarized_for_the_pushed_candidate(any_registry, artifacts, tmp_path):
    registry = any_registry
    report = kmot_report(artifacts)
    (tmp_path / "report.json").write_text(json.dumps(report))
    version = registry.push(artifacts / "a.tflite", name="digits", report=tmp_path / "report.json")
    assert version.metrics == {"accuracy": 0.97, "accuracy_delta": -0.01, "p50_ms": 0.5,
                               "p90_ms": 0.6, "gzip_bytes": 350.0, "argmax_agreement": 0.99}
    assert version.report == report
    # A file the report does not know (and several candidates): the report is kept,
    # but no candidate's numbers are attributed to it.
    assert registry.push(artifacts / "c.tflite", name="digits", report=report).metrics == {}


def test_default_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KMOT_REGISTRY", str(tmp_path / "from-env"))
    assert default_root() == tmp_path / "from-env"
    assert Registry().root == tmp_path / "from-env"
    monkeypatch.delenv("KMOT_REGISTRY")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".kmot" / "registry"


def test_reading_an_empty_registry_creates_nothing(tmp_path):
    registry = Registry(tmp_path / "nothing-here")
    assert registry.list() == [] and registry.models() == []
    with pytest.raises(RegistryError, match=r"Unknown model name\. Expected a pushed model "
                       r"\(it has none yet\).*Received: name='digits'"):
        registry.show("digits")
    assert not registry.root.exists()


def test_unknown_name_lists_the_known_ones(any_registry, artifacts):
    registry = any_registry
    registry.push(artifacts / "a.tflite", name="digits")
    for call in (lambda: registry.show("digit"), lambda: registry.list("digit"),
                 lambda: registry.current("digit"), lambda: registry.promote("digit", 1),
                 lambda: registry.rollback("digit"), lambda: registry.history("digit")):
        with pytest.raises(RegistryError, match=r"Unknown model name\. Expected one of "
                           r"\['digits'\].*push a version first.*Received: name='digit'"):
            call()


def test_unknown_version_gives_the_range(any_registry, artifacts):
    registry = any_registry
    registry.push(artifacts / "a.tflite", name="digits")
    registry.push(artifacts / "b.tflite", name="digits")
    for call in (lambda: registry.show("digits", 3), lambda: registry.promote("digits", 3),
                 lambda: registry.pull("digits", 3, dest=artifacts / "out.tflite")):
        with pytest.raises(RegistryError, match=r"Unknown version of 'digits'\. Expected a "
                           r"version from 1 to 2.*Received: version=3"):
            call()


@pytest.mark.parametrize("version", [0, -1, True, "2", 1.0])
def test_bad_version_numbers(registry, version):
    with pytest.raises(RegistryError, match=r"Expected a version number: an int >= 1.*"
                       r"Received: version="):
        registry.show("digits", version)


@pytest.mark.parametrize("name", ["", "has space", "../escape", "-dash", "x" * 129, None, 3])
def test_bad_names(registry, artifacts, name):
    with pytest.raises(RegistryError,
                       match=r"Expected a model name of 1-128 letters.*Received: name="):
        registry.push(artifacts / "a.tflite", name=name)


def test_missing_empty_and_folder_artifacts(any_registry, artifacts, tmp_path):
    registry = any_registry
    with pytest.raises(RegistryError, match=r"No such artifact file\. Expected an existing file"
                       r".*Received: .*missing\.tflite"):
        registry.push(tmp_path / "missing.tflite", name="m")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(RegistryError, match=r"Expected a non-empty artifact.*\(0 bytes\)"):
        registry.push(tmp_path / "empty.tflite", name="m")
    with pytest.raises(RegistryError, match=r"Expected the artifact to be a file.*tar czf"):
        registry.push(artifacts, name="m")
    with pytest.raises(RegistryError, match=r"Expected the artifact as a path.*Received: bytes"):
        registry.push(b"abc", name="m")
    assert registry.list() == []


def test_bad_reports(any_registry, artifacts, tmp_path):
    registry = any_registry
    with pytest.raises(RegistryError, match=r"No such report file\. Expected a JSON file.*"
                       r"Received: report='.*nope\.json'"):
        registry.push(artifacts / "a.tflite", name="m", report=tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(RegistryError, match=r"The report file is not valid JSON\. Expected a "
                       r"JSON object.*Received: .*broken\.json \(Expecting"):
        registry.push(artifacts / "a.tflite", name="m", report=tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(RegistryError, match=r"Expected the report file to hold a JSON object.*"
                       r"Received: a JSON list"):
        registry.push(artifacts / "a.tflite", name="m", report=tmp_path / "list.json")
    with pytest.raises(RegistryError, match=r"Expected `report=` to be a JSON-serializable dict"
                       r".*Received: Object of type set"):
        registry.push(artifacts / "a.tflite", name="m", report={"classes": {1, 2}})
    with pytest.raises(RegistryError, match=r"Expected `report=` to be a path to a report\.json"
                       r".*Received: report=int"):
        registry.push(artifacts / "a.tflite", name="m", report=3)
    assert registry.list() == []        # nothing is recorded when an input is bad


def test_bad_tags_and_metadata(any_registry, artifacts):
    registry = any_registry
    with pytest.raises(RegistryError, match=r"Expected `tags=` to be a list of non-empty "
                       r"strings.*Received: tags='int8'"):
        registry.push(artifacts / "a.tflite", name="m", tags="int8")
    with pytest.raises(RegistryError, match=r"Expected `tags=` to be a list.*Received: tags=3"):
        registry.push(artifacts / "a.tflite", name="m", tags=3)
    assert registry.push(artifacts / "a.tflite", name="m", tags=(t for t in ["x"])).tags == ("x",)
    with pytest.raises(RegistryError, match=r"Expected `metadata=` to be a JSON-serializable "
                       r"dict.*Received: list"):
        registry.push(artifacts / "a.tflite", name="m", metadata=["a"])
    with pytest.raises(RegistryError, match=r"Expected `metadata=` to be a JSON-serializable "
                       r"dict.*Received: Object of type bytes"):
        registry.push(artifacts / "a.tflite", name="m", metadata={"blob": b"x"})


def test_root_must_be_a_folder_and_the_index_a_registry(tmp_path, artifacts):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match=r"Expected the registry root to be a folder.*"
                       r"Received: .*file is a file"):
        Registry(tmp_path / "file")
    root = tmp_path / "bad"
    root.mkdir()
    (root / "index.sqlite").write_text("this is not a database" * 100)
    with pytest.raises(RegistryError, match=r"Cannot use the registry index\. Expected a SQLite "
                       r"file written by kmot.*Received: .*index\.sqlite \(file is not a database"):
        Registry(root).push(artifacts / "a.tflite", name="m")
    with pytest.raises(RegistryError, match=r"Cannot use the registry index"):
        Registry(root).list()


def test_an_index_from_a_newer_kmot_is_refused(registry, artifacts):
    import sqlite3

    registry.push(artifacts / "a.tflite", name="m")
    with sqlite3.connect(registry.root / "index.sqlite") as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RegistryError, match=r"written by a newer kmot \(index schema 99; this "
                       r"kmot reads up to 1\)\. Upgrade kmot"):
        registry.list("m")
