"""`kmot bench --remote`: measured over ssh on a real sshd started on 127.0.0.1.

Every failure the user can meet (nothing listening, unknown or changed host key,
a key the server refuses, no Python, no ai-edge-litert, a command killed midway,
a reply that lies) is produced for real and must be a `KmotError` that names the
problem and the fix.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kmot.cli import app
from kmot.errors import KmotError
from kmot.evaluate import Report, compare
from kmot.evaluate.remote import Remote, RemoteError, parse_target
from kmot.evaluate.remote_sshd import SSHD, local_sshd, make_key

pytestmark = pytest.mark.skipif(
    not os.path.exists(SSHD),
    reason=f"{SSHD} is not installed (apt-get install openssh-server); the remote tests run "
           "against a real sshd")

cli = CliRunner()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with local_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _remote(server, **kw):
    options = {"identity": server.identity, "known_hosts": server.known_hosts,
               "python": sys.executable, "timeout": 120}
    return Remote(server.target, **{**options, **kw})


def _script(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def _bench(files, remote, **kw):
    return compare({"float": files / "float.tflite", "int8": files / "int8.tflite"},
                   files / "val.npz", runs=5, warmup=1, memory=False, remote=remote, **kw)


def test_bench_remote_measures_there_and_reports_the_machine(sshd, files, tmp_path):
    out = tmp_path / "out"
    result = cli.invoke(app, ["bench", str(files / "float.tflite"), str(files / "int8.tflite"),
                              "--data", str(files / "val.npz"), "--out", str(out),
                              "--runs", "200", "--warmup", "2", "--remote", sshd.target,
                              "--remote-identity", sshd.identity,
                              "--remote-known-hosts", sshd.known_hosts,
                              "--remote-python", sys.executable])
    assert result.exit_code == 0, result.output
    report = Report.load(out)
    remote = report.settings.remote
    assert remote.target == sshd.target and remote.measured == ["latency", "memory"]
    assert {"python", "platform", "machine", "cpu", "cpu_count", "numpy",
            "ai-edge-litert"} <= set(remote.environment)
    assert remote.environment["ai-edge-litert"] == report.environment["ai-edge-litert"]
    for c in report.candidates:
        assert len(c.latency.samples_ms) == 200 and min(c.latency.samples_ms) > 0
        assert c.memory is not None and c.memory.peak_mb > c.memory.idle_mb > 0
        assert 0 < c.latency.p50_ms <= c.latency.p90_ms <= c.latency.p99_ms
    # metrics come from this machine, on the same files
    local = compare({"float": files / "float.tflite", "int8": files / "int8.tflite"},
                    files / "val.npz", runs=2, warmup=0, memory=False)
    assert [c.metrics for c in report.candidates] == [c.metrics for c in local.candidates]
    text = (out / "report.md").read_text()
    assert f"Latency and memory measured on {sshd.target}" in text
    assert "metrics, fidelity, size and ops on this machine" in text
    assert json.loads((out / "report.json").read_text())["settings"]["remote"]["target"] \
        == sshd.target


def test_nothing_listening_is_a_clear_error(files, sshd, tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago, now closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    result = cli.invoke(app, ["bench", str(files / "float.tflite"), "--data",
                              str(files / "val.npz"), "--out", str(out), "--remote",
                              f"ssh://someone@127.0.0.1:{port}", "--remote-identity",
                              sshd.identity])
    assert result.exit_code == 2, result.output
    assert "connection refused" in result.output and "sshd" in result.output
    assert not out.exists()


def test_unknown_host_key_is_refused_not_accepted(files, sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(RemoteError, match=r"is not known, and kmot never accepts an unknown "
                                          r"key.*ssh-keyscan -p \d+ 127.0.0.1.*--remote-known"):
        _bench(files, _remote(sshd, known_hosts=str(empty)))
    assert empty.read_text() == ""  # nothing was added behind the user's back


def test_changed_host_key_is_refused(files, sshd, tmp_path):
    other = make_key(tmp_path / "other")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.split()[:2])}\n")
    with pytest.raises(RemoteError, match="differs from the one on record.*replace its line"):
        _bench(files, _remote(sshd, known_hosts=str(known)))


def test_key_the_server_refuses(files, sshd, tmp_path):
    make_key(tmp_path / "stranger")
    with pytest.raises(RemoteError, match="refused the login.*--remote-identity KEY.*"
                                          "authorized_keys"):
        _bench(files, _remote(sshd, identity=str(tmp_path / "stranger")))


def test_a_key_others_can_read(files, sshd, tmp_path):
    shared = tmp_path / "shared_key"
    shared.write_bytes(Path(sshd.identity).read_bytes())
    shared.chmod(0o644)
    with pytest.raises(RemoteError, match="others can read it.*chmod 600"):
        _bench(files, _remote(sshd, identity=str(shared)))


def test_remote_without_python(files, sshd):
    with pytest.raises(RemoteError, match="has no Python at '/nonexistent/python3'.*"
                                          "--remote-python"):
        _bench(files, _remote(sshd, python="/nonexistent/python3"))


def test_remote_without_ai_edge_litert(files, sshd, tmp_path):
    bare = tmp_path / "bare"  # a Python with the standard library only
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(RemoteError, match="cannot import ai_edge_litert.*pip install "
                                          "ai-edge-litert"):
        _bench(files, _remote(sshd, python=str(bare / "bin" / "python")))


def test_remote_command_killed_midway(files, sshd, tmp_path):
    # The remote's whole session is killed 2 s in, during a warm-up of millions of runs.
    (tmp_path / "tmp").mkdir()  # the bootstrap's folder, which a killed run leaves behind
    python = _script(tmp_path / "python", f"#!/bin/sh\nexport TMPDIR={tmp_path / 'tmp'}\n"
                                          "( sleep 2; kill -9 0 ) &\n"
                                          f"exec {sys.executable} \"$@\"\n")
    with pytest.raises(RemoteError, match="cut before the measurement finished.*run again"):
        compare([files / "float.tflite"], files / "val.npz", runs=5, warmup=50_000_000,
                memory=False, remote=_remote(sshd, python=python))


_HEAD = '{"protocol": 1, "environment": {}, "idle_bytes": null, "candidates": '


def test_a_measurement_over_its_time_limit_is_stopped_on_both_sides(files, sshd, tmp_path):
    (tmp_path / "tmp").mkdir()
    python = _script(tmp_path / "python", f"#!/bin/sh\nexport TMPDIR={tmp_path / 'tmp'}\n"
                                          f"exec {sys.executable} \"$@\"\n")
    with pytest.raises(RemoteError, match="took over 3 s.*Lower --runs"):
        compare([files / "float.tflite"], files / "val.npz", runs=5, warmup=50_000_000,
                memory=False, remote=_remote(sshd, python=python, timeout=3))
    for _ in range(100):  # the remote's own limit stops its runner and removes its folder
        if not any((tmp_path / "tmp").iterdir()):
            break
        time.sleep(0.1)
    assert not any((tmp_path / "tmp").iterdir())


@pytest.mark.parametrize("reply, expected", [
    (_HEAD + '[{"name": "float", "times_ms": [NaN]}, {"name": "int8", "times_ms": [1.0]}]}',
     "at candidates.0.times_ms.0: Input should be a finite number"),
    (_HEAD + '[{"name": "float", "times_ms": [-1.0]}, {"name": "int8", "times_ms": [1.0]}]}',
     "greater than 0"),
    (_HEAD + '[{"name": "float", "times_ms": ["1.0"]}, {"name": "int8", "times_ms": [1.0]}]}',
     "Input should be a valid number"),
    (_HEAD + '[{"name": "float", "times_ms": [1.0]}, {"name": "int8", "times_ms": [1.0]}]}',
     "Expected 5 timings for float. Received: 1"),
    (_HEAD + '[{"name": "x", "times_ms": [1, 1, 1, 1, 1]}]}',
     r"Expected the candidates \['float', 'int8'\]"),
    ("not json at all", "returned no valid result"),
])
def test_a_reply_that_does_not_hold_is_rejected(files, sshd, tmp_path, reply, expected):
    liar = _script(tmp_path / "python", f"#!/bin/sh\ncat >/dev/null\necho '{reply}'\n")
    with pytest.raises(RemoteError, match=expected):
        _bench(files, _remote(sshd, python=liar))


@pytest.mark.parametrize("target", ["http://host", "ssh://-oProxyCommand=x", "ssh://u@h:0",
                                    "ssh://u@h:70000", "ssh://u@h x", "ssh://"])
def test_bad_targets(target):
    with pytest.raises(RemoteError, match=r"Expected --remote ssh://user@host\[:port\]"):
        parse_target(target)


def test_bad_options_fail_before_connecting(files, tmp_path):
    assert parse_target("ssh://pi@raspberry.local:2222") == ("pi", "raspberry.local", 2222)
    assert parse_target("ssh://[::1]") == (None, "::1", 22)
    with pytest.raises(RemoteError, match="No such file for identity"):
        Remote("ssh://u@h", identity=str(tmp_path / "missing"))
    with pytest.raises(RemoteError, match=f"Received: {os.path.expanduser('~')}/"):
        Remote("ssh://u@h", known_hosts="~/no-such-kmot-known-hosts")
    with pytest.raises(KmotError, match="Expected remote to be an ssh://.*Received: int"):
        compare([files / "float.tflite"], files / "val.npz", runs=2, memory=False, remote=22)
    with pytest.raises(KmotError, match=r"measures LiteRT \(.tflite\) candidates.*model "
                                        r"\(keras\)"):
        compare([files / "model.keras"], files / "val.npz", runs=2, memory=False,
                remote="ssh://u@127.0.0.1:1")
