"""A throwaway OpenSSH server on 127.0.0.1, for testing and benchmarking ``--remote``.

It runs ``/usr/sbin/sshd -D`` as a child with its own host key, a user key and
an ``authorized_keys`` in one folder, on a free port, and stops it on exit. Its
known-hosts file records the real host key, so clients check it strictly.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SSHD", "LocalSSHD", "local_sshd", "make_key"]

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class LocalSSHD:
    """A running server: its target URL, the key it accepts, the known-hosts file."""

    target: str
    port: int
    identity: str
    known_hosts: str
    host_public_key: str
    folder: Path


def make_key(path: Path) -> str:
    """A new ed25519 key pair at `path` (and ``path.pub``); returns the public line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)
    return Path(f"{path}.pub").read_text().strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_sshd(folder: str | os.PathLike) -> Iterator[LocalSSHD]:
    """Runs an sshd on 127.0.0.1 that accepts one fresh key for the current user.

    Raises:
        FileNotFoundError: sshd or ssh-keygen is not installed.
        RuntimeError: the server did not start (its log is quoted).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        raise FileNotFoundError(f"{SSHD} or ssh-keygen (install openssh-server)")
    if os.geteuid() == 0:  # a root sshd insists on its privilege-separation folder
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_public = make_key(folder / "host_key")
    (folder / "authorized_keys").write_text(make_key(folder / "user_key") + "\n")
    port = _free_port()
    (folder / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "StrictModes no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "PermitRootLogin prohibit-password", f"PidFile {folder / 'sshd.pid'}", ""]))
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {' '.join(host_public.split()[:2])}\n")
    log = open(folder / "sshd.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield LocalSSHD(target=f"ssh://{getpass.getuser()}@127.0.0.1:{port}", port=port,
                        identity=str(folder / "user_key"), known_hosts=str(known),
                        host_public_key=host_public, folder=folder)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
