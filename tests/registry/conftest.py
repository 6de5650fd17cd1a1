"""Registry fixtures: a real MLflow tracking server, and an empty registry of either backend.

The server (``mlflow server`` with a SQLite store and artifacts served from a folder
under the session's tmp dir, on a free port of 127.0.0.1) starts once per session,
when a test first asks for it, and is stopped at the end. Each test that uses it
starts from an empty model registry.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from kmot.registry import Registry

START_TIMEOUT_S = 180        # a cold start (first import, database migrations) on a busy machine


@dataclass(frozen=True)
class MlflowServer:
    uri: str                 # what kmot takes: mlflow://127.0.0.1:PORT
    url: str                 # what MLflow's own client takes: http://127.0.0.1:PORT
    artifacts: Path          # the server's artifact store, as files

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def clear(self):
        """Deletes every registered model (their versions, aliases and tags go with them)."""
        client = self.client()
        for model in client.search_registered_models(max_results=1000):
            client.delete_registered_model(model.name)

    def artifact(self, name, version):
        """The file on the server's disk that holds a version's artifact."""
        mv = self.client().get_model_version(name, str(version))
        source = mv.tags["kmot.source"]
        return next(self.artifacts.rglob(f"{mv.run_id}/artifacts/artifact/{source}"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port():
    """A port of 127.0.0.1 that nothing listens on."""
    return free_port()


def _answers(url):
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    try:
        import mlflow  # noqa: F401
    except ImportError:
        pytest.fail('The MLflow registry tests need mlflow: pip install -e ".[test]"')
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # Its job runner (GenAI judges; a dozen worker processes) is of no use here and
        # makes stopping the server take seconds; its usage telemetry is not wanted either.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
             "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (folder / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server did not start (exit code {proc.poll()}):\n{tail}")
            time.sleep(0.25)
        yield MlflowServer(f"mlflow://127.0.0.1:{port}", url, folder / "artifacts")
    finally:
        # The server runs uvicorn in a child process: stop the whole group it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def mlflow_registry(mlflow_server):
    """An empty registry on the session's MLflow server."""
    mlflow_server.clear()
    yield Registry(mlflow_server.uri)
    mlflow_server.clear()


@pytest.fixture(params=["folder", pytest.param("mlflow", marks=pytest.mark.slow)])
def any_registry(request, tmp_path):
    """An empty registry: a folder, then the same test on an MLflow server."""
    if request.param == "folder":
        return Registry(tmp_path / "registry")
    return request.getfixturevalue("mlflow_registry")
