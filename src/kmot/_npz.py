"""The one reader of ``.npz`` data files, and the finite-value check on data arrays.

Data files come from outside and nothing in them is trusted: pickled objects are
never loaded (``allow_pickle=False``), and every way a file can fail to be a numeric
``.npz`` (missing, a folder, empty, truncated, random bytes, a ``.npy``, object or
text arrays) raises the caller's `KmotError` subclass, naming the file and the fix.
Calibration, validation and training data are all read here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kmot.errors import KmotError

__all__ = ["read_npz", "nonfinite", "check_finite"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_NUMERIC_KINDS = "biuf"


def read_npz(
    path: str | os.PathLike,
    *,
    error: type[KmotError],
    what: str = "data file",
    holding: str = "",
    example: str = "np.savez(path, x=x)",
) -> dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` file, checked to be numeric.

    Args:
        path: the file.
        error: the `KmotError` subclass to raise (e.g. `CalibrationDataError`).
        what: how messages name the file ("data file", "training data file").
        holding: what the file should hold, appended to "an .npz file".
        example: the call that writes a good file, quoted as the fix.

    Returns:
        ``{name: array}`` in the file's order.

    Raises:
        error: the file is missing, unreadable, not an ``.npz``, damaged, empty of
            arrays, or holds an object or non-numeric array.

    Example:
        >>> from kmot.errors import EvaluationError
        >>> read_npz("val.npz", error=EvaluationError)["x"].shape  # doctest: +SKIP
        (120, 8, 8, 1)
    """
    path = Path(path)
    fix = f"Write it with {example}."

    def fail(received: str, remedy: str = fix) -> KmotError:
        return error(f"Expected an .npz file written by numpy.savez{holding}. "
                     f"Received: {received}. {remedy}")

    if not path.exists():
        raise error(f"No such {what}. Expected an .npz file{holding}. Received: {path}")
    if path.is_dir():
        raise fail(f"{path} is a folder", "Pass the .npz file itself.")
    if not path.is_file():
        raise fail(f"{path} is not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise fail(f"{path} cannot be read ({err.strerror or err})",
                   "Check the file's permissions.") from err
    if not head:
        raise fail(f"{path} is empty (0 bytes)")
    if head.startswith(_NPY_MAGIC):
        raise fail(f"{path} is a .npy file (one array, written by np.save)")
    if not head.startswith(_ZIP_MAGIC):
        raise fail(f"{path} is not an .npz (zip) archive: it starts with {head!r}")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                try:
                    arrays[name] = npz[name]
                except ValueError as err:
                    if "allow_pickle" not in str(err):
                        raise
                    raise error(
                        f"Array '{name}' in {path.name} holds Python objects (dtype=object), "
                        "which kmot never unpickles: loading them could run code. Expected "
                        f"numeric arrays. Received: {path}. Save numbers, e.g. "
                        f"np.asarray(a, dtype='float32')."
                    ) from None
    except KmotError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged archive raises many types
        reason = str(err).splitlines()[0][:200] if str(err) else ""
        raise fail(f"{path} is damaged or truncated ({type(err).__name__}"
                   f"{': ' + reason if reason else ''})") from err
    if not arrays:
        raise fail(f"{path} holds no arrays")
    strays = [name for name, array in arrays.items() if not isinstance(array, np.ndarray)]
    if strays:  # a zip of other files (a .keras model, say): NumPy returns their bytes
        raise fail(f"{path} is a zip archive whose member(s) {strays[:3]} are not NumPy "
                   "arrays (a .keras model or another zip file?)")
    for name, array in arrays.items():
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise error(
                f"Array '{name}' in {path.name} is not numeric. Expected bool, integer or "
                f"float arrays. Received: dtype={array.dtype}. Convert it, e.g. "
                f"np.asarray(a, dtype='float32')."
            )
    return arrays


def nonfinite(name: str, array: np.ndarray) -> str | None:
    """Where ``array`` first holds a NaN or an infinity, as ``"x[17, 3] is inf"``; None if nowhere."""
    array = np.asarray(array)
    if array.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    flat = int(np.argmax(bad))  # the first in C order
    index = np.unravel_index(flat, array.shape)
    where = f"{name}[{', '.join(str(int(i)) for i in index)}]" if array.ndim else name
    count = int(bad.sum())
    more = f" ({count - 1} more non-finite value(s) after it)" if count > 1 else ""
    return f"{where} is {array.flat[flat]}{more}"


def check_finite(
    arrays: Mapping[str, np.ndarray],
    *,
    error: type[KmotError],
    what: str,
    source: str,
    why: str = "a NaN or an infinity makes every result computed from it meaningless",
) -> None:
    """Raises ``error`` naming the first NaN or infinity in ``arrays``.

    Args:
        arrays: ``{name: array}``; the name prefixes the index in the message.
        error: the `KmotError` subclass to raise.
        what: what the data is for, starting the message ("Representative data").
        source: where the arrays came from ("calib.npz", "the data arrays").
        why: the consequence of a non-finite value, for the message.
    """
    for name, array in arrays.items():
        found = nonfinite(name, array)
        if found:
            raise error(
                f"{what} must be finite: {why}. Expected finite values in {source}. Received: "
                f"{found}. Drop or repair those samples, e.g. keep "
                f"np.isfinite(x).reshape(len(x), -1).all(axis=1)."
            )
