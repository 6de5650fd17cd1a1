"""The MLflow backend against a real `mlflow server` (see conftest.py): what it keeps where,
rollback through the alias, tampering refused, the CLI, and every error it names.

What both backends do alike is tested once, on both, in test_promote.py, test_pull.py
and test_store.py (`any_registry`).
"""

import hashlib
import json
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from kmot.cli import app
from kmot.errors import RegistryError
from kmot.registry import Registry, VerifyProblem, mlflow_lock

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def files(tmp_path):
    for i in (1, 2, 3):
        (tmp_path / f"model_{i}.tflite").write_bytes(f"weights {i}".encode() * 300)
    (tmp_path / "report.json").write_text(json.dumps({"accuracy": 0.97, "p50_ms": 0.4}))
    return tmp_path


def push_three(registry, files):
    return [registry.push(files / f"model_{i}.tflite", name="digits") for i in (1, 2, 3)]


def leftovers(folder):
    return sorted(p.name for p in folder.rglob(".*.part"))


def test_promote_1_2_3_then_two_rollbacks_leave_1_in_production(mlflow_registry, mlflow_server,
                                                                 files):
    push_three(mlflow_registry, files)
    for version in (1, 2, 3):
        assert mlflow_registry.promote("digits", version).production
    assert mlflow_registry.rollback("digits").version == 2
    assert mlflow_registry.rollback("digits").version == 1

    client = mlflow_server.client()
    assert client.get_model_version_by_alias("digits", "production").version == "1"
    fresh = Registry(mlflow_server.uri)                # the stack is on the server, not in memory
    assert fresh.current("digits").version == 1
    assert [(e.action, e.previous, e.version) for e in fresh.history("digits")] == [
        ("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3),
        ("rollback", 3, 2), ("rollback", 2, 1)]
    with pytest.raises(RegistryError, match=r"Nothing to roll back to for 'digits': v1 is the "
                       r"only version ever promoted"):
        fresh.rollback("digits")
    assert [m.name for m in client.search_registered_models()] == ["digits"]   # no lock left


def test_push_keeps_checksum_metadata_metrics_and_report_on_the_server(mlflow_registry,
                                                                       mlflow_server, files):
    version = mlflow_registry.push(files / "model_1.tflite", name="digits",
                                   report=files / "report.json", metadata={"git_sha": "abc123"},
                                   tags=["int8"])
    content = (files / "model_1.tflite").read_bytes()
    assert (version.name, version.version, version.source) == ("digits", 1, "model_1.tflite")
    assert version.sha256 == hashlib.sha256(content).hexdigest()
    assert version.size_bytes == len(content)
    assert version.metrics == {"accuracy": 0.97, "p50_ms": 0.4}
    assert mlflow_registry.show("digits", 1) == version
    assert mlflow_registry.show("digits", 1).report == {"accuracy": 0.97, "p50_ms": 0.4}

    client = mlflow_server.client()
    mv = client.get_model_version("digits", "1")
    assert mv.tags["kmot.sha256"] == version.sha256
    assert mv.tags["kmot.size_bytes"] == str(len(content))
    assert json.loads(mv.tags["kmot.metadata"]) == {"git_sha": "abc123"}
    assert json.loads(mv.tags["kmot.tags"]) == ["int8"]
    run = client.get_run(mv.run_id)
    assert run.data.metrics == {"accuracy": 0.97, "p50_ms": 0.4}
    assert run.info.status == "FINISHED"
    stored = sorted(a.path for a in client.list_artifacts(mv.run_id, "artifact")) + sorted(
        a.path for a in client.list_artifacts(mv.run_id, "kmot"))
    assert stored == ["artifact/model_1.tflite", "kmot/report.json"]
    assert mlflow_server.artifact("digits", 1).read_bytes() == content


def test_pull_verifies_the_sha256_and_refuses_a_tampered_artifact(mlflow_registry,
                                                                  mlflow_server, files):
    push_three(mlflow_registry, files)
    pulled = mlflow_registry.pull("digits", 2, dest=files / "out" / "model.tflite")
    assert pulled.read_bytes() == (files / "model_2.tflite").read_bytes()

    stored = mlflow_server.artifact("digits", 2)
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF                          # one flipped byte on the server's disk
    stored.write_bytes(bytes(data))
    dest = files / "deploy" / "model.tflite"
    dest.parent.mkdir()
    dest.write_bytes(b"the model in service")
    with pytest.raises(RegistryError) as caught:
        mlflow_registry.pull("digits", 2, dest=dest)
    message = str(caught.value)
    assert message.startswith("Checksum mismatch: the stored artifact of digits v2 is corrupted.")
    expected = mlflow_registry.show("digits", 2).sha256
    assert f"Expected sha256 {expected} ({len(data)} bytes)" in message
    assert f"Received: sha256 {hashlib.sha256(bytes(data)).hexdigest()}" in message
    assert f"Nothing was written to {dest}" in message
    assert dest.read_bytes() == b"the model in service"
    assert leftovers(files) == []
    with pytest.raises(RegistryError, match="Checksum mismatch"):
        mlflow_registry.pull("digits", 2, dest=files / "new" / "model.tflite")
    assert not (files / "new").exists()                  # folders it made are removed again

    result = mlflow_registry.verify()
    assert (result.ok, result.checked_versions) == (False, 3)
    assert [(p.problem, p.versions) for p in result.problems] == [("mismatch", ("digits v2",))]
    cli = runner.invoke(app, ["registry", "verify", "--root", mlflow_server.uri])
    assert cli.exit_code == 1 and "MISMATCH digits v2" in cli.output

    stored.unlink()
    with pytest.raises(RegistryError, match=r"The stored artifact of digits v2 is missing on the "
                       r"MLflow server\. Expected mlflow-artifacts:.*model_2\.tflite.*Nothing was "
                       r"written\. Received: missing file"):
        mlflow_registry.pull("digits", 2, dest=dest)
    problem = mlflow_registry.verify().problems[0]
    assert isinstance(problem, VerifyProblem) and problem.problem == "missing"


def test_the_cli_takes_an_mlflow_root(mlflow_server, mlflow_registry, files):
    root = ["--root", mlflow_server.uri]

    def kmot(*args):
        result = runner.invoke(app, ["registry", *map(str, args), *root])
        assert result.exit_code == 0, result.output
        return result.output

    assert "pushed digits v1" in kmot("push", files / "model_1.tflite", "--name", "digits",
                                      "--report", files / "report.json", "--tag", "int8",
                                      "--meta", "git_sha=abc123", "--promote")
    assert json.loads(kmot("push", files / "model_2.tflite", "--name", "digits",
                           "--json"))["version"] == 2
    assert "digits v2 is production" in kmot("promote", "digits", 2)
    assert "rolled back: digits v1 is production again" in kmot("rollback", "digits")
    assert "digits" in kmot("list") and mlflow_server.uri in kmot("list")
    listed = json.loads(kmot("list", "digits", "--json"))
    assert [(v["version"], v["production"]) for v in listed] == [(1, True), (2, False)]
    shown = json.loads(kmot("show", "digits", "--json"))
    assert (shown["tags"], shown["metadata"]) == (["int8"], {"git_sha": "abc123"})
    assert shown["report"] == {"accuracy": 0.97, "p50_ms": 0.4}
    assert "rollback" in kmot("history", "digits")
    assert "sha256 verified" in kmot("pull", "digits", "-o", f"{files}/deploy/")
    assert (files / "deploy" / "model_1.tflite").read_bytes() == \
        (files / "model_1.tflite").read_bytes()
    assert "verified 2 objects (2 versions" in kmot("verify")

    result = runner.invoke(app, ["registry", "gc", *root])
    assert result.exit_code == 2
    assert "gc is a feature of the folder registry" in result.output
    result = runner.invoke(app, ["registry", "show", "digits", "7", *root])
    assert result.exit_code == 2 and "Expected a version from 1 to 2" in result.output


def test_the_cli_on_mlflow_loads_no_tensorflow(mlflow_server, mlflow_registry, files, cli_fresh):
    mlflow_registry.push(files / "model_1.tflite", name="digits")
    root = ["--root", mlflow_server.uri]
    summary = cli_fresh([["kmot", "registry", *c, *root] for c in (
        ["push", str(files / "model_2.tflite"), "--name", "digits", "--promote"], ["list"],
        ["show", "digits", "--json"], ["pull", "digits", "-o", str(files / "out.tflite")])])
    assert summary["heavy"] == []
    assert [code for code, _ in summary["runs"]] == [0, 0, 0, 0], summary["runs"]
    assert json.loads(summary["runs"][2][1])["version"] == 2      # stdout is the JSON alone
    assert (files / "out.tflite").read_bytes() == (files / "model_2.tflite").read_bytes()


def test_kmot_registry_defaults_to_an_mlflow_uri_in_the_environment(mlflow_server,
                                                                   mlflow_registry, files,
                                                                   monkeypatch):
    monkeypatch.setenv("KMOT_REGISTRY", mlflow_server.uri)
    assert Registry().root == mlflow_server.uri
    result = runner.invoke(app, ["registry", "push", str(files / "model_1.tflite"),
                                 "--name", "digits"])
    assert result.exit_code == 0, result.output
    assert [v.version for v in mlflow_registry.list("digits")] == [1]


def test_an_alias_moved_outside_kmot_is_recorded_as_a_promotion(mlflow_registry,
                                                                mlflow_server, files):
    push_three(mlflow_registry, files)
    mlflow_registry.promote("digits", 1)
    mlflow_server.client().set_registered_model_alias("digits", "production", "3")   # MLflow UI
    assert mlflow_registry.current("digits").version == 3
    assert mlflow_registry.rollback("digits").version == 1
    assert [(e.action, e.previous, e.version) for e in mlflow_registry.history("digits")] == [
        ("promote", None, 1), ("promote", 1, 3), ("rollback", 3, 1)]

    mlflow_registry.promote("digits", 2)                 # [1, 2]; then back to 1 in MLflow
    mlflow_server.client().set_registered_model_alias("digits", "production", "1")
    mlflow_registry.promote("digits", 3)                 # recorded as a rollback first
    assert [e.action for e in mlflow_registry.history("digits")][-2:] == ["rollback", "promote"]
    assert mlflow_registry.rollback("digits").version == 1


def test_rollbacks_at_once_each_pop_one_version(mlflow_registry, mlflow_server, files):
    for i in (1, 2, 3):
        mlflow_registry.push(files / f"model_{i}.tflite", name="digits")
    (files / "model_4.tflite").write_bytes(b"weights 4" * 300)
    mlflow_registry.push(files / "model_4.tflite", name="digits")
    for version in (1, 2, 3, 4):
        mlflow_registry.promote("digits", version)
    errors, start = [], threading.Barrier(3, timeout=60)

    def roll_back():
        try:
            registry = Registry(mlflow_server.uri)      # a client of its own, as another job
            registry.models()
            start.wait()
            registry.rollback("digits")
        except Exception as err:     # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=roll_back) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    history = mlflow_registry.history("digits")
    rollbacks = [(e.previous, e.version) for e in history if e.action == "rollback"]
    assert rollbacks == [(4, 3), (3, 2), (2, 1)], history
    assert mlflow_registry.current("digits").version == 1


def test_a_lock_left_by_a_killed_kmot_is_broken(mlflow_registry, mlflow_server, files,
                                                monkeypatch):
    push_three(mlflow_registry, files)
    mlflow_server.client().create_registered_model(f"{mlflow_lock.LOCK_PREFIX}digits")
    monkeypatch.setattr(mlflow_lock, "STALE_S", 0.5)
    assert mlflow_registry.promote("digits", 2).production
    assert [m.name for m in mlflow_server.client().search_registered_models()] == ["digits"]


def test_tags_edited_outside_kmot_are_refused(mlflow_registry, mlflow_server, files):
    push_three(mlflow_registry, files)
    mlflow_registry.promote("digits", 1)
    client = mlflow_server.client()
    client.set_model_version_tag("digits", "2", "kmot.source", "../../etc/passwd")
    with pytest.raises(RegistryError, match=r"The MLflow server at mlflow://127\.0\.0\.1:\d+ "
                       r"holds a value kmot never writes: model version digits v2 has "
                       r"source='\.\./\.\./etc/passwd'.*Its kmot\.\* tags were changed outside "
                       r"kmot"):
        mlflow_registry.pull("digits", 2, dest=files / "out")
    assert not (files / "out").exists()
    client.set_model_version_tag("digits", "3", "kmot.sha256", "not a digest")
    with pytest.raises(RegistryError, match=r"model version digits v3 has sha256='not a digest'"):
        mlflow_registry.show("digits", 3)
    client.set_registered_model_tag("digits", "kmot.event.000002", '{"action": "delete"}')
    with pytest.raises(RegistryError, match=r"registered model 'digits' has tag "
                       r"kmot\.event\.000002=.*The production history was changed outside kmot"):
        mlflow_registry.history("digits")


def test_an_empty_server_and_models_kmot_did_not_push(mlflow_registry, mlflow_server, files):
    assert mlflow_registry.list() == [] and mlflow_registry.models() == []
    with pytest.raises(RegistryError, match=r"Unknown model name\. Expected a pushed model \(it "
                       r"has none yet\) in the registry at mlflow://127\.0\.0\.1:\d+"):
        mlflow_registry.show("digits")
    mlflow_server.client().create_registered_model("someone-elses")
    mlflow_registry.push(files / "model_1.tflite", name="digits")
    assert [m.name for m in mlflow_registry.models()] == ["digits"]
    with pytest.raises(RegistryError, match=r"Unknown model name\. Expected one of \['digits'\]"):
        mlflow_registry.list("someone-elses")


def test_an_unreachable_server_names_the_uri_and_how_to_start_one(unused_port):
    port = unused_port
    registry = Registry(f"mlflow://127.0.0.1:{port}")
    with pytest.raises(RegistryError, match=rf"Cannot reach the MLflow tracking server at "
                       rf"mlflow://127\.0\.0\.1:{port} \(http://127\.0\.0\.1:{port}\): .*refused.*"
                       rf"start one with `mlflow server --host 127\.0\.0\.1 --port {port} "
                       rf"--backend-store-uri sqlite:///mlflow\.db"):
        registry.list()
    result = runner.invoke(app, ["registry", "list", "--root", f"mlflow://127.0.0.1:{port}"])
    assert result.exit_code == 2 and "Cannot reach the MLflow tracking server" in result.output


@pytest.mark.parametrize("root, why", [
    ("mlflow://", "it names no host"),
    ("mlflow://host:port", "the port is not a number from 1 to 65535"),
    ("mlflow://host:0", "the port is not a number from 1 to 65535"),
    ("mlflow://me:secret@host:5000", r"put credentials in \$MLFLOW_TRACKING_USERNAME"),
    ("mlflow://host:5000?x=1", "it has a query or fragment"),
])
def test_bad_mlflow_uris(root, why):
    with pytest.raises(RegistryError, match=rf"Expected an MLflow server URI as mlflow://HOST:PORT"
                       rf".*; {why}.*Received: root="):
        Registry(root)


def test_an_unknown_scheme_is_refused():
    with pytest.raises(RegistryError, match=r"Expected the registry root to be a folder, or an "
                       r"MLflow tracking server as mlflow://HOST:PORT.*Received: root='s3://b/x'"):
        Registry("s3://b/x")


def test_mlflow_is_imported_only_by_the_mlflow_backend_and_its_absence_is_explained(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"model")
    code = (
        "import sys\n"
        "from kmot.registry import Registry\n"
        f"folder = Registry({str(tmp_path / 'registry')!r})\n"
        f"folder.push({str(tmp_path / 'm.tflite')!r}, name='m')\n"
        "folder.list()\n"
        "server = Registry('mlflow://127.0.0.1:1')\n"
        "assert 'mlflow' not in sys.modules, 'imported before it is needed'\n"
        "sys.modules['mlflow'] = None                 # as if it were not installed\n"
        "try:\n"
        "    server.list()\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("RegistryError An MLflow registry needs the mlflow package")
    assert 'pip install "kmot[mlflow]"' in result.stdout


def test_a_server_that_is_not_mlflow_is_named_as_such(unused_port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):                      # noqa: N802 - the http.server protocol
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", unused_port), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(RegistryError, match=rf"Cannot reach the MLflow tracking server at "
                           rf"mlflow://127\.0\.0\.1:{unused_port} .*/health answered 404, so it "
                           rf"is not an MLflow tracking server"):
            Registry(f"mlflow://127.0.0.1:{unused_port}").models()
    finally:
        server.shutdown()
        server.server_close()


def test_a_push_the_server_refuses_records_no_version(mlflow_registry, mlflow_server, files):
    mlflow_registry.push(files / "model_1.tflite", name="digits")
    client = mlflow_server.client()
    experiment = client.get_experiment_by_name("kmot-registry").experiment_id
    runs = len(client.search_runs([experiment]))                      # active runs only
    with pytest.raises(RegistryError, match=r"The MLflow server at mlflow://127\.0\.0\.1:\d+ could "
                       r"not complete the request\. Expected a reachable MLflow tracking server.*"
                       r"Received: "):
        mlflow_registry.push(files / "model_2.tflite", name="digits",
                             metadata={"notes": "x" * 200_000})       # over MLflow's tag limit
    assert [v.version for v in mlflow_registry.list("digits")] == [1]
    assert len(client.search_runs([experiment])) == runs              # its run was deleted


def test_a_lock_held_too_long_is_reported(mlflow_registry, mlflow_server, files, monkeypatch):
    push_three(mlflow_registry, files)
    mlflow_server.client().create_registered_model(f"{mlflow_lock.LOCK_PREFIX}digits")
    monkeypatch.setattr(mlflow_lock, "WAIT_S", 0.3)
    with pytest.raises(RegistryError, match=r"Another kmot kept the production lock of 'digits' "
                       r"on mlflow://127\.0\.0\.1:\d+ for more than 0 s.*delete the registered "
                       r"model '_kmot-lock\.digits' in MLflow"):
        mlflow_registry.promote("digits", 1)
    assert mlflow_registry.current("digits") is None


def test_a_missing_report_is_named(mlflow_registry, mlflow_server, files):
    mlflow_registry.push(files / "model_1.tflite", name="digits", report=files / "report.json")
    mlflow_server.artifact("digits", 1).parent.parent.joinpath("kmot", "report.json").unlink()
    with pytest.raises(RegistryError, match=r"The report of digits v1 is missing on the MLflow "
                       r"server at mlflow://127\.0\.0\.1:\d+\. Expected kmot/report\.json in run "
                       r"\w+, as kmot pushed it.*Received: missing file"):
        mlflow_registry.show("digits")
    assert [m.num_versions for m in mlflow_registry.models()] == [1]    # models reads tags only
