"""Capturing what TensorFlow and the converter print below Python's sys.stdout."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

__all__ = ["captured_output"]


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Silences the converter's C++ and Python chatter; keeps it for error messages.

    Redirects the process's stdout/stderr file descriptors, since the converter
    logs from C++, below Python's sys.stdout.
    """
    log: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            log.append(text + "".join(f"warning: {w.message}\n" for w in caught))
