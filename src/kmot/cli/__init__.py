"""`kmot` command line: parse, call the public API, print. Nothing else lives here."""

from __future__ import annotations

import os

from kmot.cli import check, models, registry, search, structure  # noqa: F401 - registers the commands
from kmot.cli._common import app, load_npz_inputs

__all__ = ["app", "main", "load_npz_inputs"]


def main() -> None:
    # The CLI's output is for people: keep TensorFlow's C++ logging quiet.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    app()
