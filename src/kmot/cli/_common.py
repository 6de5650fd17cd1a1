"""What every `kmot` command shares: the app, the console, errors, the runtime import."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


app = typer.Typer(
    help="kmot: make Keras 3 models smaller and faster for LiteRT, with proof.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
    raise typer.Exit(2)


def _load_runtime() -> None:
    """Imports LiteRT and Keras (and so TensorFlow) with their start-up log lines hidden.

    Only the commands that convert, run or train models call it, first thing:
    `gate` and `registry` read JSON, YAML and SQLite and never load TensorFlow.
    """
    from kmot._quiet import captured_output

    with captured_output():
        import ai_edge_litert.interpreter  # noqa: F401
        import keras  # noqa: F401


def load_npz_inputs(path: Path, model) -> object:
    """Model inputs from an ``.npz``: one array, an ``x`` array, or one per input name."""
    import numpy as np

    from kmot.errors import CalibrationDataError

    if not path.is_file():
        raise CalibrationDataError(f"No such data file. Expected an .npz file. Received: {path}")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    names = [t.name for t in model.inputs]
    if len(names) > 1 and all(n in arrays for n in names):
        return tuple(arrays[n] for n in names)
    if len(names) == 1:
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        for key in ("x", names[0]):
            if key in arrays:
                return arrays[key]
    raise CalibrationDataError(
        f"Cannot tell which arrays of {path.name} are the model's inputs. Expected a "
        f"single array, an array named 'x' (one-input model) or one array per input "
        f"name {names}. Received: arrays {sorted(arrays)}"
    )


