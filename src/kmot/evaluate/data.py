"""Validation data for `compare`: accepted forms, and checks against a model's inputs.

Every candidate runs on the same samples. Data is read once; each candidate then
takes its inputs from it by position (arrays) or by input name (an ``.npz`` or a
dict), and the arrays are checked against that candidate's inputs (count, shape,
dtype) before anything runs, so a mismatch is reported in kmot's words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmot._npz import check_finite, read_npz
from kmot.errors import EvaluationError

__all__ = ["EvalData", "InputSpec", "load_data"]

_ACCEPTED = (
    "(x, y) with x an array or a tuple of arrays (one per model input) and y the "
    "labels or None; a dict with 'x' (or one array per input name) and 'y'; or the "
    "path of an .npz file holding the same keys"
)


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, shape (None: any size), dtype, quantized or not.

    A quantized integer input takes float data: it is quantized with the
    input's scale and zero point automatically.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quantized: bool = False

    def describe(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        kind = f"{self.dtype}, quantized from float" if self.quantized else self.dtype
        return f"'{self.name}' shape=({dims}) dtype={kind}"

    @property
    def takes_floats(self) -> bool:
        return self.quantized or np.dtype(self.dtype).kind == "f"


@dataclass(frozen=True)
class EvalData:
    """Validation inputs (by position or by name), labels, and where they came from."""

    positional: tuple[np.ndarray, ...] | None
    named: Mapping[str, np.ndarray] | None
    y: np.ndarray | None
    source: str

    @property
    def num_samples(self) -> int:
        arrays = self.positional or tuple(self.named.values())
        return int(arrays[0].shape[0])

    def inputs_for(self, specs: Sequence[InputSpec], candidate: str) -> list[np.ndarray]:
        """The input arrays for one candidate, checked and cast to its dtypes.

        Raises:
            EvaluationError: the data does not fit the candidate's inputs.
        """
        arrays = self._select(specs, candidate)
        out = []
        for array, spec in zip(arrays, specs):
            out.append(_check(array, spec, candidate))
        counts = [a.shape[0] for a in out] + ([len(self.y)] if self.y is not None else [])
        if len(set(counts)) > 1:
            raise EvaluationError(
                f"Every input of candidate {candidate!r} and the labels must have the "
                f"same number of samples. Received: {[a.shape[0] for a in out]} "
                f"sample(s) per input and "
                f"{'no labels' if self.y is None else f'{len(self.y)} label(s)'} "
                f"in {self.source}."
            )
        return out

    def _select(self, specs: Sequence[InputSpec], candidate: str) -> list[np.ndarray]:
        names = [s.name for s in specs]
        described = ", ".join(s.describe() for s in specs)
        if self.positional is not None:
            if len(self.positional) != len(specs):
                raise EvaluationError(
                    f"Candidate {candidate!r} has {len(specs)} input(s): {described}. "
                    f"Expected x to hold one array per input. Received: "
                    f"{len(self.positional)} array(s) in {self.source}. Pass x as a "
                    "tuple of arrays in the model's input order."
                )
            return list(self.positional)
        assert self.named is not None
        if len(specs) == 1 and "x" in self.named:
            return [self.named["x"]]
        if all(n in self.named for n in names):
            return [self.named[n] for n in names]
        raise EvaluationError(
            f"Cannot find the inputs of candidate {candidate!r} ({described}) in "
            f"{self.source}. Expected an array 'x' (one-input models) or one array "
            f"per input name {names}. Received: keys {sorted(self.named)}"
        )


def _check(array: np.ndarray, spec: InputSpec, candidate: str) -> np.ndarray:
    want = spec.shape
    fits = array.ndim == len(want) and all(
        w is None or w == got for w, got in zip(want[1:], array.shape[1:]))
    if not fits:
        hint = ("Add the batch axis (x[None] for one sample)."
                if array.ndim == len(want) - 1 else "Reshape the data to the model's input.")
        raise EvaluationError(
            f"Validation data does not fit input {spec.describe()} of candidate "
            f"{candidate!r}. Expected an array of shape (num_samples, "
            f"{', '.join('None' if d is None else str(d) for d in want[1:])}). "
            f"Received: shape {array.shape}. {hint}"
        )
    if spec.takes_floats:
        if array.dtype.kind not in "fiub":
            raise EvaluationError(
                f"Input {spec.describe()} of candidate {candidate!r} takes numbers. "
                f"Received: dtype {array.dtype}. Convert the data to float32."
            )
        return array.astype(np.float32 if spec.quantized else spec.dtype, copy=False)
    if array.dtype.kind not in "iub":
        raise EvaluationError(
            f"Input {spec.describe()} of candidate {candidate!r} takes integers. "
            f"Received: dtype {array.dtype}. Cast the data with .astype('{spec.dtype}')."
        )
    return array.astype(spec.dtype, copy=False)


def load_data(data: Any) -> EvalData:
    """Reads validation data in any accepted form; checks it is not empty and is finite.

    Args:
        data: ``(x, y)``, a dict with ``x``/input names and ``y``, or an .npz path.

    Returns:
        An `EvalData`.

    Raises:
        EvaluationError: the form is not accepted, a file is missing or not a
            numeric .npz, inputs and labels differ in length, there are no
            samples, or a value is NaN or infinite (named with its index).

    Example:
        >>> load_data((np.zeros((4, 3)), np.arange(4))).num_samples
        4
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        arrays = read_npz(path, error=EvaluationError,
                          holding=" with arrays 'x' (or one per input name) and 'y'",
                          example="np.savez(path, x=x_val, y=y_val)")
        return _from_mapping(arrays, path.name)
    if isinstance(data, Mapping):
        return _from_mapping({k: np.asarray(v) for k, v in data.items()}, "the data dict")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if isinstance(x, np.ndarray):
            x = (x,)
        if (isinstance(x, (tuple, list)) and x
                and all(isinstance(a, np.ndarray) for a in x)):
            return _finish(tuple(x), None, y, "the data arrays")
    raise EvaluationError(f"Expected validation data as {_ACCEPTED}. Received: {_kind(data)}")


def _kind(data: Any) -> str:
    if isinstance(data, (tuple, list)):
        return f"a {type(data).__name__} of {len(data)} item(s): " + ", ".join(
            type(d).__name__ for d in data[:4])
    return type(data).__name__


def _from_mapping(arrays: dict[str, np.ndarray], source: str) -> EvalData:
    y = arrays.pop("y", None)
    if not arrays:
        raise EvaluationError(
            f"Expected input arrays ('x' or one per input name) in {source}. "
            f"Received: keys {sorted(arrays) + (['y'] if y is not None else [])}"
        )
    return _finish(None, arrays, y, source)


def _finish(positional, named, y, source: str) -> EvalData:
    arrays = list(positional or named.values())
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if n == 0:
        raise EvaluationError(
            f"Expected at least one validation sample. Received: inputs of shape "
            f"{arrays[0].shape} in {source}."
        )
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != n:
            raise EvaluationError(
                f"Expected one label per sample ({n} samples). Received: y of shape "
                f"{y.shape} in {source}."
            )
    if positional is not None:
        names = ["x"] if len(positional) == 1 else [f"x[{i}]" for i in range(len(positional))]
        checked = dict(zip(names, positional))
    else:
        checked = dict(named)
    if y is not None:
        checked["y"] = y
    check_finite(checked, error=EvaluationError, what="Validation data", source=source,
                 why="metrics, fidelity and the report would be NaN")
    return EvalData(positional, named, y, source)
