"""What every `kmot` command shares: the app and its error boundary, the consoles,
checks on the paths a command will write, and the runtime import.

Errors are handled in one place, `_Boundary.invoke`, around every command: a
`KmotError` or an expected OS or file error prints ``error: ...`` and exits 2; any
other exception prints one line and exits 1 (the traceback with ``kmot --debug``);
Ctrl-C prints ``interrupted`` and exits 130. Commands raise, they never print errors.

User text (file names, model names, tags, messages) is printed as plain text:
the consoles parse no markup, so ``[/]`` or ``[red]`` in a name prints as typed.
Style is given with `rich.text.Text` and ``style=`` arguments only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import sys
import threading
import time
import traceback
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from typer import _click
from typer.core import TyperGroup

from kmot.errors import KmotError

#: Errors that are the user's input or environment, not a bug: ``error:``, exit 2.
EXPECTED_ERRORS = (KmotError, OSError, zipfile.BadZipFile)


def _plain_console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False, highlight=False, emoji=False)


console = _plain_console()
err_console = _plain_console(stderr=True)


class _Interrupts:
    """Remembers a Ctrl-C even where a library swallows its KeyboardInterrupt.

    TensorFlow runs finalizers (``__del__``) during conversion; a KeyboardInterrupt
    raised inside one is printed as "Exception ignored" and dropped, and the
    conversion goes on to write its file. The handler below still raises, and also
    sets a flag that `raise_if_interrupted` and the boundary check.
    """

    def __init__(self) -> None:
        self.seen = False

    def _handler(self, signum: int, frame: Any) -> None:
        self.seen = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        self.seen = False
        previous = signal.getsignal(signal.SIGINT)
        # Leave an inherited SIG_IGN (nohup, background jobs) and foreign handlers alone.
        if threading.current_thread() is not threading.main_thread() or \
                previous is not signal.default_int_handler:
            yield
            return
        signal.signal(signal.SIGINT, self._handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


_interrupts = _Interrupts()


@contextlib.contextmanager
def progress_lines(first: str):
    """A ``progress(message)`` callable: on a terminal, one status line updated in
    place; elsewhere (a CI log, a pipe) a line per message with the seconds since the
    start, so a long run shows where it is."""
    if console.is_terminal:
        with console.status(Text(first)) as status:
            yield lambda message: status.update(Text(message))
        return
    start = time.monotonic()

    def show(message: str) -> None:
        console.print(Text(f"[{time.monotonic() - start:6.1f} s] {message}"), soft_wrap=True)

    show(first)
    yield show


def raise_if_interrupted() -> None:
    """Raises KeyboardInterrupt if Ctrl-C was pressed during this command.

    Called before a command writes its result, so an interrupt that a library
    swallowed still stops the command with nothing written.
    """
    if _interrupts.seen:
        raise KeyboardInterrupt


def print_error(message: str) -> None:
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def _describe_os_error(err: OSError) -> str:
    where = err.filename if err.filename is not None else "-"
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    what = err.strerror or str(err) or type(err).__name__
    remedy = {
        errno.ENOENT: "Check that the path exists.",
        errno.EACCES: "Check the permissions, or choose another path.",
        errno.EPERM: "Check the permissions, or choose another path.",
        errno.EROFS: "Choose a path on a writable file system.",
        errno.EISDIR: "Give a file path, not a folder.",
        errno.ENOTDIR: "A part of the path is a file, not a folder: fix the path.",
        errno.EEXIST: "Remove it or choose another path.",
        errno.ENOSPC: "Free disk space or choose another location.",
    }.get(err.errno, "Check the path and retry.")
    return f"{what}. Expected a path kmot can use. Received: {where}. {remedy}"


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and not isinstance(err, KmotError):
        return _describe_os_error(err)
    if isinstance(err, zipfile.BadZipFile):
        return f"Expected a readable zip archive. Received: {err}. Check the file is complete."
    return str(err) or type(err).__name__


def _report(err: BaseException, *, debug: bool) -> int:
    """Prints ``err`` for a person (one line unless ``debug``); returns the exit code."""
    if isinstance(err, KeyboardInterrupt) or _interrupts.seen:
        # A Ctrl-C a library turned into its own error is still a Ctrl-C.
        err_console.print("interrupted", soft_wrap=True)
        return 130
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    if isinstance(err, EXPECTED_ERRORS):
        print_error(_message(err))
        return 2
    first = (str(err).splitlines() or [""])[0][:300]
    hint = "" if debug else " Rerun with `kmot --debug ...` for the traceback."
    print_error(f"unexpected {type(err).__name__}{': ' + first if first else ''} (this is a "
                f"bug in kmot or a library it uses; please report it).{hint}")
    return 1


class _Boundary(TyperGroup):
    """The app's group: runs every command inside the one error boundary."""

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            with _interrupts.installed():
                result = super().invoke(ctx)
                raise_if_interrupted()
                return result
        except (typer.Exit, typer.Abort, _click.exceptions.ClickException, BrokenPipeError):
            raise  # typer's main prints usage errors and handles a closed pipe (`| head`)
        except (KeyboardInterrupt, Exception) as err:  # noqa: BLE001 - this is the boundary
            raise typer.Exit(_report(err, debug=bool(ctx.params.get("debug")))) from None


app = typer.Typer(
    cls=_Boundary,
    help="kmot: make Keras 3 models smaller and faster for LiteRT, with proof.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="on an unexpected error, print the full traceback"),
) -> None:
    """kmot: make Keras 3 models smaller and faster for LiteRT, with proof."""


def _load_runtime() -> None:
    """Imports LiteRT and Keras (and so TensorFlow) with their start-up log lines hidden.

    Only the commands that convert, run or train models call it, first thing:
    `gate` and `registry` read JSON, YAML and SQLite and never load TensorFlow.
    """
    from kmot._quiet import captured_output

    with captured_output():
        import ai_edge_litert.interpreter  # noqa: F401
        import keras  # noqa: F401


def _writable_folder(folder: Path, option: str, path: Path) -> None:
    """The nearest existing folder on ``folder``'s way up must take new files."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise KmotError(
            f"Expected {option} to be a path under a folder. Received: {option} {path}, "
            f"but {existing} is a file. Fix the path."
        )
    probe = existing / f".kmot-probe-{secrets.token_hex(6)}.part"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise KmotError(
            f"Expected {option} to be a path kmot can write. Received: {option} {path}, "
            f"but {existing} does not take new files ({err.strerror or err}). "
            "Choose a writable location."
        ) from None
    probe.unlink(missing_ok=True)


def check_output_file(path: Path, *, option: str = "-o", inputs: tuple[Path, ...] = ()) -> None:
    """Checks, before any work, that ``path`` can be written as a new or replaced file.

    Raises:
        KmotError: ``path`` is a folder, is one of the command's ``inputs``, lies
            under a file, or is in a folder that does not take new files.
    """
    if path.is_dir():
        raise KmotError(
            f"Expected {option} to name a file. Received: {option} {path}, which is a "
            f"folder. Give a file path, e.g. {option} {path / 'model.tflite'}."
        )
    for source in inputs:
        with contextlib.suppress(OSError):
            if path.exists() and source.exists() and os.path.samefile(path, source):
                raise KmotError(
                    f"Expected {option} to be a new file, not an input of this command. "
                    f"Received: {option} {path}, which is the input {source}: writing it "
                    "would destroy it. Choose another output path."
                )
    _writable_folder(path.parent, option, path)


def check_output_folder(path: Path, *, option: str = "--out") -> None:
    """Checks, before any work, that ``path`` is (or can become) a writable folder.

    Raises:
        KmotError: ``path`` is a file, lies under a file, or cannot take new files.
    """
    if path.exists() and not path.is_dir():
        raise KmotError(
            f"Expected {option} to be a folder. Received: {option} {path}, which is a "
            "file. Choose a folder path (it is created if missing)."
        )
    _writable_folder(path, option, path)


def load_npz_inputs(path: Path, model: Any) -> object:
    """Model inputs from an ``.npz``: one array, an ``x`` array, or one per input name.

    Raises:
        CalibrationDataError: the file is not a numeric ``.npz``, its arrays do not
            name the model's inputs, or an input holds a NaN or an infinity.
    """
    from kmot._npz import check_finite, read_npz
    from kmot.errors import CalibrationDataError

    path = Path(path)
    arrays = read_npz(path, error=CalibrationDataError, example="np.savez(path, x=x_train[:200])")
    names = [t.name for t in model.inputs]
    chosen: dict[str, Any] | None = None
    if len(names) > 1 and all(n in arrays for n in names):
        chosen = {n: arrays[n] for n in names}
    elif len(names) == 1:
        if len(arrays) == 1:
            chosen = dict(arrays)
        else:
            key = next((k for k in ("x", names[0]) if k in arrays), None)
            chosen = None if key is None else {key: arrays[key]}
    if chosen is None:
        raise CalibrationDataError(
            f"Cannot tell which arrays of {path.name} are the model's inputs. Expected a "
            f"single array, an array named 'x' (one-input model) or one array per input "
            f"name {names}. Received: arrays {sorted(arrays)}"
        )
    check_finite(chosen, error=CalibrationDataError, what="Model input data", source=path.name,
                 why="an infinity crashes the LiteRT converter and a NaN corrupts every "
                     "range and error measured on it")
    values = tuple(chosen.values())
    return values if len(names) > 1 else values[0]
