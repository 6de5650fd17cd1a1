"""Fault injection for tests: run a `kmot` command and kill -9 it part-way.

Kill points are offsets in seconds drawn from a seeded generator over the
command's measured duration, so a failing point can be replayed. Every kill and
every bad input a test tries is counted in `COUNTS`; the run's totals are printed
at the end of the pytest session (see ``pytest_terminal_summary`` in conftest).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

#: Totals printed at the end of the run: "kills", "bad_inputs", "failures".
COUNTS: Counter = Counter()

CLI = [sys.executable, "-I", "-m", "kmot.cli"]


def cli_env(**extra: str) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200", **extra}


def run_cli(args: list[str], *, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Runs ``kmot ARGS`` to completion in a fresh, isolated interpreter."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env or cli_env(), timeout=timeout)


def timed_run(args: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = run_cli(args, **kwargs)
    return result, time.perf_counter() - start


def kill_points(seed: int, count: int, duration: float, *, start: float = 0.0) -> list[float]:
    """``count`` sorted offsets in ``[start, duration)``, reproducible from ``seed``."""
    rng = random.Random(seed)
    return sorted(rng.uniform(start, duration) for _ in range(count))


def run_killed(args: list[str], delay: float, *, cwd=None, env=None) -> bool:
    """Starts ``kmot ARGS``, sends SIGKILL after ``delay`` seconds.

    Returns:
        True when the process was killed, False when it had already finished.
    """
    proc = subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, env=env or cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        COUNTS["kills"] += 1
        return True


def unwritable_folder(folder: Path) -> Path:
    """A folder that takes no new files: chmod for a user; for root, a path on procfs."""
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        return folder
    (folder / "probe").unlink()
    return Path("/proc/kmot-read-only")
