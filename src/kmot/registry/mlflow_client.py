"""The connection to an MLflow tracking server: its URI, the client, and its errors as kmot's.

``mlflow`` is imported here, on the first request, and only here: a folder registry,
``import kmot`` and ``kmot registry --help`` never load it. Before the first request
the server's ``/health`` is asked (10 s at most), so that a server that is down
fails at once with the command that starts one, instead of after MLflow's retries.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kmot.errors import RegistryError

__all__ = ["PROBE_TIMEOUT_S", "Server", "server_url"]

PROBE_TIMEOUT_S = 10.0
_HTTP = {"mlflow": "http", "mlflow+http": "http", "mlflow+https": "https"}


def _bad_uri(root: str, why: str) -> RegistryError:
    return RegistryError(
        f"Expected an MLflow server URI as mlflow://HOST:PORT (e.g. mlflow://127.0.0.1:5000), "
        f"or mlflow+https://HOST[:PORT][/PATH] for TLS; {why}. Received: root={root!r}")


def server_url(root: str) -> str:
    """The server's HTTP(S) URL, from a ``mlflow://`` (or ``mlflow+https://``) URI.

    Raises:
        RegistryError: no host, a port that is not a number from 1 to 65535, a query
            or fragment, or credentials in the URI.
    """
    scheme, rest = root.split("://", 1)
    parts = urlsplit(f"{_HTTP[scheme.lower()]}://{rest}")
    try:
        port = parts.port
    except ValueError:
        raise _bad_uri(root, "the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise _bad_uri(root, "it names no host")
    if parts.username is not None or parts.password is not None:
        raise _bad_uri(root, "put credentials in $MLFLOW_TRACKING_USERNAME and "
                             "$MLFLOW_TRACKING_PASSWORD (or $MLFLOW_TRACKING_TOKEN), not in the "
                             "URI, where messages and reports would show them")
    if parts.query or parts.fragment:
        raise _bad_uri(root, "it has a query or fragment")
    if port == 0:
        raise _bad_uri(root, "the port is not a number from 1 to 65535")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _start_hint(url: str) -> str:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    local = host in ("127.0.0.1", "localhost", "::1")
    where = "start one" if local else f"on {host}, start one"
    return (f"{where} with `mlflow server --host {host if local else '0.0.0.0'} --port {port} "
            f"--backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlartifacts` "
            f"(see docs/registry.md, \"A team registry: MLflow\")")


class Server:
    """An MLflow tracking server: a client made on first use, and its errors as `RegistryError`.

    Args:
        root: the ``mlflow://`` URI, checked now; the server is first asked on the
            first use of `client`.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.url = server_url(root)
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The `mlflow.MlflowClient`, made (after asking ``/health``) on first use."""
        if self._client is None:
            self._import()
            self._probe()
            # MLflow draws a progress bar on stderr for every download; kmot prints its
            # own one-line result (and --json output must stay clean).
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            self._client = self._mlflow.MlflowClient(tracking_uri=self.url, registry_uri=self.url)
        return self._client

    def _import(self) -> None:
        try:
            import mlflow
            import mlflow.entities
            import requests
            from mlflow.exceptions import MlflowException
        except ImportError as err:
            raise RegistryError(
                f"An MLflow registry needs the mlflow package, which is not installed. "
                f"Install it with `pip install \"kmot[mlflow]\"`, or use a registry folder. "
                f"Received: root={self.root!r} ({err})") from None
        self._mlflow, self._error, self._requests = mlflow, MlflowException, requests

    def _probe(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=PROBE_TIMEOUT_S):
                return
        except urllib.error.HTTPError as err:
            if err.code != 404:
                return          # it answers: an auth proxy or a busy server speaks for itself later
            reason = f"{self.url}/health answered 404, so it is not an MLflow tracking server"
        except (OSError, ValueError) as err:
            reason = str(getattr(err, "reason", err))
        raise RegistryError(
            f"Cannot reach the MLflow tracking server at {self.root} ({self.url}): {reason}. "
            f"Expected a running MLflow server there: {_start_hint(self.url)}, or check the "
            f"host, the port and `root=` / --root / $KMOT_REGISTRY. Received: root={self.root!r}")

    @property
    def mlflow(self) -> Any:
        """The imported `mlflow` module (after `client` was first used)."""
        return self._mlflow

    def code(self, err: BaseException) -> str | None:
        """The MLflow error code of ``err`` (``RESOURCE_DOES_NOT_EXIST``, ...), if it has one."""
        return getattr(err, "error_code", None) if isinstance(err, self._error) else None

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turns what the server or the connection raises into a `RegistryError`."""
        try:
            yield
        except RegistryError:
            raise
        except Exception as err:
            if self._client is None or not isinstance(
                    err, (self._error, self._requests.RequestException)):
                raise
            message = str(getattr(err, "message", err)).strip()
            raise RegistryError(
                f"The MLflow server at {self.root} could not complete the request. Expected a "
                f"reachable MLflow tracking server (2.12 or newer) that lets this user create "
                f"and tag registered models and runs; check the server's log. "
                f"Received: {message}") from None
