"""Latency and peak memory measured on another machine over ssh (``kmot bench --remote``).

One ssh connection per report: its stdin carries a tar of `remote_runner.py`,
`kmot.evaluate.memory`'s child program, the ``.tflite`` files and each model's
input batch; a small bootstrap run by the remote's Python unpacks it into a
temporary folder, runs the runner and removes the folder. The runner prints one
JSON object, which is validated here before anything of it reaches a report
(nothing from the remote is trusted: types, finiteness, positivity, counts,
names).

Only latency and peak memory come from the remote; task metrics, fidelity, the
error profile, size and op coverage are computed on this machine with the same
files (`RemoteMachine.measured` says so in the report).

ssh is the system's OpenSSH client with ``BatchMode=yes`` (no prompt ever
blocks), a connect timeout, keep-alives that notice a dead link, and strict
host key checking: an unknown or changed host key is an error, never silently
accepted. Pass ``known_hosts`` (``--remote-known-hosts``) to check against a
file of your own, and ``identity`` (``--remote-identity``) for the key to use.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from kmot.errors import EvaluationError
from kmot.evaluate.schema import MemoryStats, RemoteMachine, error_location

__all__ = ["Remote", "RemoteError", "RemoteFigures", "measure_remote", "parse_target"]

MEASURED = ["latency", "memory"]
_MAX_OUTPUT = 64 * 2**20


class RemoteError(EvaluationError):
    """The remote machine could not be reached, or did not measure the models."""


@dataclass(frozen=True)
class Remote:
    """Where and how to reach the machine to measure on.

    Args:
        target: ``ssh://[user@]host[:port]``.
        identity: the private key file to log in with (ssh ``-i``; default: ssh's own).
        known_hosts: a known-hosts file to check the host key against (default:
            ssh's own files). Checking is always strict.
        python: the remote's Python command (needs numpy and ai-edge-litert).
        connect_timeout: seconds to wait for the connection.
        timeout: seconds the whole measurement may take.
    """

    target: str
    identity: str | None = None
    known_hosts: str | None = None
    python: str = "python3"
    connect_timeout: int = 10
    timeout: float = 1800

    def __post_init__(self) -> None:
        parse_target(self.target)
        for option in ("identity", "known_hosts"):
            value = getattr(self, option)
            if value is None:
                continue
            value = os.path.expanduser(os.fspath(value))
            object.__setattr__(self, option, value)  # frozen: normalized once, here
            if not Path(value).is_file():
                flag = "--remote-" + option.replace("_", "-")
                raise RemoteError(f"No such file for {option} ({flag}). Expected a readable "
                                  f"file. Received: {value}")
        if not self.python.strip():
            raise RemoteError("Expected the remote's Python command (--remote-python), e.g. "
                              "python3. Received: an empty string")


_TARGET = re.compile(r"ssh://(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
                     r"(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])"
                     r"(?::(?P<port>\d{1,5}))?/?")


def parse_target(target: str) -> tuple[str | None, str, int]:
    """``(user, host, port)`` of ``ssh://[user@]host[:port]``.

    Names may not start with ``-``, so nothing in a target can become an ssh option.

    Raises:
        RemoteError: not of that form, or a port outside 1..65535.
    """
    match = _TARGET.fullmatch(target) if isinstance(target, str) else None
    port = int(match["port"] or 22) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise RemoteError(f"Expected --remote ssh://user@host[:port] (port 1-65535; names of "
                          f"letters, digits, '.', '_', '-'). Received: {target!r}")
    return match["user"], match["host"].strip("[]"), port


def _ssh_command(remote: Remote, command: str) -> list[str]:
    user, host, port = parse_target(remote.target)
    ssh = shutil.which("ssh")
    if ssh is None:
        raise RemoteError("Measuring on a remote machine needs the OpenSSH client. Expected an "
                          "`ssh` command on PATH. Received: none. Install it (Debian/Ubuntu: "
                          "apt-get install openssh-client).")
    args = [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={remote.connect_timeout}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6",
            "-o", "StrictHostKeyChecking=yes", "-p", str(port)]
    if remote.identity:
        args += ["-i", remote.identity, "-o", "IdentitiesOnly=yes"]
    if remote.known_hosts:
        args += ["-o", f"UserKnownHostsFile={remote.known_hosts}"]
    return [*args, "--", f"{user}@{host}" if user else host, command]


# Run by the remote's Python: unpack the tar from stdin (plain files only, no paths),
# run the runner, remove the folder whatever happens. argv[1] is the time limit: a
# runner still going when this side gives up is killed there too, not left running.
_BOOTSTRAP = r"""
import os, shutil, subprocess, sys, tarfile, tempfile
d = tempfile.mkdtemp(prefix="kmot-remote-")
rc = 1
try:
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
        for m in t:
            if not m.isfile() or not m.name or m.name != os.path.basename(m.name):
                sys.exit("kmot-remote: unexpected entry in the job: %r" % m.name)
            with open(os.path.join(d, m.name), "wb") as f:
                f.write(t.extractfile(m).read())
    rc = subprocess.call([sys.executable, "-I", os.path.join(d, "remote_runner.py"), d],
                         timeout=float(sys.argv[1]))
except subprocess.TimeoutExpired:
    sys.exit("kmot-remote: the runner took over %s s and was stopped" % sys.argv[1])
finally:
    shutil.rmtree(d, ignore_errors=True)
sys.exit(rc)
"""


@dataclass(frozen=True)
class RemoteFigures:
    """What the remote measured: raw latency samples, memory (or why not), the machine."""

    times: dict[str, np.ndarray]
    memory: dict[str, MemoryStats | None]
    notes: dict[str, list[str]]
    machine: RemoteMachine


def _job_tar(runners: list[Any], batches: dict[str, list[np.ndarray]], job: dict) -> bytes:
    from kmot.evaluate.memory import _CHILD

    files = {"remote_runner.py": resources.files("kmot.evaluate").joinpath(
        "remote_runner.py").read_bytes(), "memory_child.py": _CHILD.encode()}
    entries = []
    for i, runner in enumerate(runners):
        model, inputs = f"m{i}.tflite", f"m{i}.npz"
        files[model] = runner.content
        buffer = io.BytesIO()
        np.savez(buffer, **_tensor_inputs(runner, batches[runner.name]))
        files[inputs] = buffer.getvalue()
        entries.append({"name": runner.name, "file": model, "inputs": inputs})
    files["job.json"] = json.dumps({**job, "candidates": entries}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _tensor_inputs(runner: Any, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays as the interpreter's input tensors take them (quantized as `LiteRTModel`
    sets them), keyed ``t<tensor index>``: the remote only sets them."""
    from kmot.export.runtime import _quantize

    return {f"t{d['index']}": _quantize(np.asarray(a), d)
            for d, a in zip(runner.model.input_details, arrays)}


_Positive = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
_Bytes = Annotated[int, Strict(), Field(gt=0)]
_Text = Annotated[str, Field(max_length=500)]


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Candidate(_Reply):
    name: str
    times_ms: list[_Positive]
    peak_bytes: _Bytes | None = None
    memory_error: Annotated[str, Field(max_length=4000)] | None = None


class _Result(_Reply):
    protocol: Literal[1]
    environment: Annotated[dict[Annotated[str, Field(max_length=100)], _Text],
                           Field(max_length=50)]
    idle_bytes: _Bytes | None
    candidates: list[_Candidate]


class _Failure(_Reply):
    protocol: Literal[1]
    error: Literal["missing_module", "model_failed", "protocol"]
    message: Annotated[str, Field(max_length=4000)]


def measure_remote(remote: Remote | str, runners: list[Any],
                   batches: dict[str, list[np.ndarray]], *, runs: int, warmup: int,
                   threads: int, batch_size: int, memory: bool) -> RemoteFigures:
    """Times (and, with `memory`, measures) LiteRT candidates on the remote machine.

    Args:
        remote: a `Remote` or its ``ssh://[user@]host[:port]`` target.
        runners: `LiteRTRunner` objects (their files and input tensors).
        batches: ``{name: arrays}`` the timed batch of each candidate (float, as
            `compare` holds them).
        runs, warmup, threads, batch_size: the local harness's settings.
        memory: also measure peak memory (net of an idle runtime) there.

    Returns:
        A `RemoteFigures`.

    Raises:
        RemoteError: a candidate that is not a LiteRT file, the connection failed
            (refused, timed out, host key unknown or changed, key refused), the
            remote lacks Python, numpy or ai-edge-litert, or its reply is missing
            or invalid (a command that died midway).
    """
    remote = Remote(remote) if isinstance(remote, str) else remote
    if not isinstance(remote, Remote):
        raise RemoteError("Expected remote to be an ssh://[user@]host[:port] string or a "
                          f"kmot.evaluate.remote.Remote. Received: {type(remote).__name__}")
    others = [f"{r.name} ({r.kind})" for r in runners if r.kind != "tflite"]
    if others:
        raise RemoteError(f"--remote measures LiteRT (.tflite) candidates, run by ai-edge-litert "
                          f"on the remote. Received: {', '.join(others)}. Convert them (kmot "
                          "convert) or bench them without --remote.")
    from kmot.evaluate.memory import peak_rss_mb

    job = {"protocol": 1, "runs": runs, "warmup": warmup, "threads": threads,
           "batch_size": batch_size, "memory": memory,
           "memory_runs": peak_rss_mb.__kwdefaults__["runs"]}
    payload = _job_tar(runners, batches, job)
    command = _ssh_command(remote, shlex.join([remote.python, "-I", "-c", _BOOTSTRAP,
                                               str(remote.timeout)]))
    try:
        done = subprocess.run(command, input=payload, capture_output=True, check=False,
                              timeout=remote.timeout)
    except subprocess.TimeoutExpired as err:
        raise RemoteError(
            f"Measuring on {remote.target} took over {remote.timeout:.0f} s. Expected the "
            "remote to finish. Received: a timeout. Lower --runs, or check the machine is "
            "not busy.") from err
    reply = _reply(remote, done)
    return _figures(remote, reply, runners, runs=runs, memory=memory)


def _last_line(data: bytes, limit: int | None = 500) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip()[:limit] if lines else ""


def _reply(remote: Remote, done: subprocess.CompletedProcess) -> _Result:
    """The remote's validated result, or the error that explains why there is none."""
    where = remote.target
    stderr = done.stderr.decode("utf-8", "replace")
    if done.returncode == 255:
        raise RemoteError(_ssh_failure(remote, stderr))
    if done.returncode == 127:
        raise RemoteError(
            f"{where} has no Python at {remote.python!r}. Expected a Python 3 with numpy and "
            f"ai-edge-litert there. Received: {_last_line(done.stderr)!r}. Install Python 3 "
            "and `pip install ai-edge-litert` on it, or name its Python with --remote-python.")
    last = _last_line(done.stdout, None) if len(done.stdout) <= _MAX_OUTPUT else ""
    if done.returncode == 3:
        try:
            failure = _Failure.model_validate_json(last)
        except ValidationError:
            failure = None
        if failure is not None and failure.error == "missing_module":
            raise RemoteError(
                f"The Python on {where} ({remote.python}) cannot import "
                f"{failure.message}. Expected numpy and ai-edge-litert installed there. "
                "Received: an ImportError. Run `pip install ai-edge-litert` on it (it brings "
                "numpy), or name another Python with --remote-python.")
        if failure is not None:
            raise RemoteError(
                f"The LiteRT interpreter on {where} could not run a candidate. Expected it to "
                f"load and invoke every file. Received: {failure.message}. Check that the "
                "remote's ai-edge-litert supports the file's ops (see the report's "
                "environment for versions).")
    if done.returncode != 0:
        reason = _last_line(done.stderr) or "no error output"
        raise RemoteError(
            f"The measurement on {where} died midway. Expected its runner to exit 0 with a "
            f"result. Received: exit code {done.returncode}, {reason!r}. Check the remote's "
            "free memory and logs, then run again.")
    try:
        return _Result.model_validate_json(last)
    except ValidationError as err:
        first = err.errors()[0]
        at = error_location(first)
        raise RemoteError(
            f"The measurement on {where} returned no valid result. Expected one JSON object "
            f"from kmot's runner (finite positive timings). Received: at {at}: "
            f"{first['msg']}. Check that {remote.python} on it runs the runner unmodified "
            "(no wrapper printing to stdout).") from None


def _ssh_failure(remote: Remote, stderr: str) -> str:
    """ssh's own failure (exit 255), named with its fix."""
    user, host, port = parse_target(remote.target)
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    received = f"Received: {last!r}" if last else "Received: no message from ssh"
    keys = f"--remote-known-hosts FILE (a file holding {host}'s key)"
    scan = f"ssh-keyscan -p {port} {host} >> ~/.ssh/known_hosts" if port != 22 else \
        f"ssh-keyscan {host} >> ~/.ssh/known_hosts"
    if "Connection refused" in stderr:
        return (f"Nothing accepts ssh connections at {host} port {port} (connection "
                f"refused). Expected an sshd listening there. {received}. Check the host and "
                "port in --remote and that sshd runs on it.")
    if "timed out" in stderr:
        return (f"Connecting to {host} port {port} timed out after {remote.connect_timeout} s. "
                f"Expected the host to answer. {received}. Check the address, the network "
                "and any firewall.")
    if "Could not resolve hostname" in stderr:
        return f"Unknown host {host!r}. Expected a resolvable name or an address. {received}."
    if "IDENTIFICATION HAS CHANGED" in stderr or "host key for" in stderr.lower() and \
            "has changed" in stderr:
        return (f"The host key of {host} port {port} differs from the one on record: the "
                f"machine was reinstalled, or someone is in the way. Expected the recorded "
                f"key. {received}. Verify the new key with the machine's owner, then replace "
                f"its line in your known-hosts file ({remote.known_hosts or '~/.ssh/known_hosts'}).")
    if "Host key verification failed" in stderr or "host key is known" in stderr:
        return (f"The host key of {host} port {port} is not known, and kmot never accepts an "
                f"unknown key. Expected it in the known-hosts file "
                f"({remote.known_hosts or '~/.ssh/known_hosts'}). {received}. Add it after "
                f"checking its fingerprint (`{scan}`), or pass {keys}.")
    if "UNPROTECTED PRIVATE KEY FILE" in stderr:
        return (f"ssh ignored the key {remote.identity}: others can read it. Expected a "
                f"private key only its owner reads. {received}. Run `chmod 600 "
                f"{remote.identity}`.")
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return (f"{host} refused the login{f' as {user}' if user else ''}. Expected a key it "
                f"accepts. {received}. Pass the private key with --remote-identity KEY, and "
                "put its .pub in the remote user's ~/.ssh/authorized_keys.")
    return (f"The ssh connection to {remote.target} failed or was cut before the measurement "
            f"finished (ssh exit 255: a lost link, or the remote command killed). {received}. "
            "Check the link and the remote's logs (out of memory?), then run again.")


def _figures(remote: Remote, reply: _Result, runners: list[Any], *, runs: int,
             memory: bool) -> RemoteFigures:
    """The reply checked against the job, then turned into report figures."""
    names = [r.name for r in runners]
    got = [c.name for c in reply.candidates]

    def invalid(what: str) -> RemoteError:
        return RemoteError(f"The measurement on {remote.target} returned an inconsistent "
                           f"result. Expected {what}. Run again; if it persists, the remote "
                           "runner was modified.")

    if got != names:
        raise invalid(f"the candidates {names}. Received: {got}")
    times, mem, notes = {}, {}, {}
    for c in reply.candidates:
        if len(c.times_ms) != runs:
            raise invalid(f"{runs} timings for {c.name}. Received: {len(c.times_ms)}")
        times[c.name] = np.asarray(c.times_ms, np.float64)
        mem[c.name], notes[c.name] = None, []
        if not memory:
            continue
        if c.peak_bytes is None or reply.idle_bytes is None:
            notes[c.name].append(f"peak memory not measured on {remote.target}: "
                                 f"{c.memory_error or 'no figure returned'}")
            continue
        # rounded as kmot.evaluate.memory.measure_peak_memory rounds local figures
        peak, idle = round(c.peak_bytes / 1e6, 3), round(reply.idle_bytes / 1e6, 3)
        mem[c.name] = MemoryStats(peak_mb=peak, idle_mb=idle, net_mb=round(peak - idle, 3))
    machine = RemoteMachine(target=remote.target, environment=dict(reply.environment),
                            measured=[m for m in MEASURED if m != "memory" or memory])
    return RemoteFigures(times=times, memory=mem, notes=notes, machine=machine)
