"""Representative (calibration) data: accepted forms, checks, and the sample budget.

Post-training int8 / int16x8 quantization measures activation ranges on samples of
real inputs. Users hold those samples in many forms; this module turns each into
one list of samples (a sample is one array per model input, each with a batch
dimension of 1) and checks them against the model's inputs before the converter
sees them, so a wrong shape is reported in kmot's words, not the converter's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kmot._npz import check_finite
from kmot.errors import CalibrationDataError

__all__ = ["InputSpec", "input_specs", "calibration_samples", "DEFAULT_NUM_SAMPLES"]

#: Samples used for calibration unless `num_samples=` says otherwise. A few hundred
#: is what LiteRT's documentation recommends; more rarely moves the ranges.
DEFAULT_NUM_SAMPLES = 200

_ACCEPTED = (
    "a NumPy array (one input), a tuple/list of arrays (one per input, in the "
    "model's input order), a dict of arrays keyed by input name, a tf.data.Dataset, "
    "or a callable returning an iterable of samples"
)


@dataclass(frozen=True)
class InputSpec:
    """What one model input expects: name, shape (None for any size) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def describe(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"'{self.name}' shape=({dims}) dtype={self.dtype}"


def input_specs(model: Any) -> list[InputSpec]:
    """The input specs of a Keras model, in its input order."""
    return [
        InputSpec(
            name=str(getattr(t, "name", f"input_{i}")),
            shape=tuple(None if d is None else int(d) for d in t.shape),
            dtype=str(t.dtype),
        )
        for i, t in enumerate(model.inputs)
    ]


def _is_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator")


def _iter_raw(data: Any, n_inputs: int) -> Iterable[Any]:
    """Yields raw elements: arrays (with a batch axis) or per-input structures."""
    if isinstance(data, (str, bytes)):
        raise CalibrationDataError(
            f"Expected representative data as {_ACCEPTED}. Received: {type(data).__name__}"
        )
    if isinstance(data, np.ndarray):
        return [np.asarray(data)]
    if isinstance(data, Mapping):
        return [data]
    if isinstance(data, (tuple, list)):
        if data and all(isinstance(a, np.ndarray) for a in data):
            return [tuple(data)]
        raise CalibrationDataError(
            f"Expected representative data as {_ACCEPTED}. Received: a "
            f"{type(data).__name__} whose items are "
            f"{sorted({type(a).__name__ for a in data}) or 'nothing'}"
        )
    if _is_dataset(data):
        return data.as_numpy_iterator()
    if callable(data):
        produced = data()
        if not isinstance(produced, Iterable):
            raise CalibrationDataError(
                "A callable given as representative data must return an iterable of "
                f"samples (e.g. be a generator function). Received: it returned "
                f"{type(produced).__name__}"
            )
        return produced
    raise CalibrationDataError(
        f"Expected representative data as {_ACCEPTED}. "
        f"Received: {type(data).__name__}"
    )


def _split_inputs(element: Any, specs: Sequence[InputSpec]) -> list[np.ndarray]:
    """One element -> one array per input (drops labels of (x, y) pairs)."""
    n = len(specs)
    if isinstance(element, Mapping):
        names = [s.name for s in specs]
        missing = [k for k in names if k not in element]
        if missing:
            raise CalibrationDataError(
                f"Representative data given as a dict must have one entry per model "
                f"input. Expected keys {names}. Received: keys {sorted(element)}"
            )
        return [np.asarray(element[k]) for k in names]
    if isinstance(element, (tuple, list)):
        parts = list(element)
        if len(parts) in (2, 3) and isinstance(parts[0], (tuple, list, Mapping)):
            return _split_inputs(parts[0], specs)  # ((x1, x2), y) or ({...}, y)
        if n == 1 and len(parts) in (2, 3):
            return [np.asarray(parts[0])]  # (x, y) or (x, y, sample_weight)
        if len(parts) != n:
            raise CalibrationDataError(
                f"The model has {n} input(s): "
                f"{', '.join(s.describe() for s in specs)}. Expected one array per "
                f"input in each sample. Received: a sample of {len(parts)} arrays"
            )
        return [np.asarray(p) for p in parts]
    if n != 1:
        raise CalibrationDataError(
            f"The model has {n} inputs: {', '.join(s.describe() for s in specs)}. "
            "Expected a tuple of arrays (one per input) or a dict keyed by input "
            f"name. Received: a single array of shape {np.shape(element)}"
        )
    return [np.asarray(element)]


def _check_batch(arrays: list[np.ndarray], specs: Sequence[InputSpec]) -> list[np.ndarray]:
    """Adds a batch axis to unbatched samples and checks shape and dtype."""
    out = []
    for array, spec in zip(arrays, specs):
        if array.ndim == len(spec.shape) - 1:
            array = array[None]
        shape_ok = array.ndim == len(spec.shape) and all(
            want is None or want == got for want, got in zip(spec.shape[1:], array.shape[1:])
        )
        if not shape_ok:
            raise CalibrationDataError(
                f"Representative data does not fit model input {spec.describe()}. "
                f"Expected samples of shape {spec.shape[1:]} (with or without a "
                f"leading batch axis). Received: shape {array.shape}. Reshape the "
                "data to the model's input shape."
            )
        want_float = np.dtype(spec.dtype).kind == "f"
        if want_float and array.dtype.kind not in "fiub":
            raise CalibrationDataError(
                f"Model input {spec.describe()} takes numbers. "
                f"Received: dtype {array.dtype}"
            )
        if not want_float and array.dtype.kind == "f":
            raise CalibrationDataError(
                f"Model input {spec.describe()} takes integers. Received: dtype "
                f"{array.dtype}. Cast the data with .astype('{spec.dtype}')."
            )
        out.append(array.astype(spec.dtype, copy=False))
    return out


def _check_finite(arrays: list[np.ndarray], specs: Sequence[InputSpec], position: int,
                  data: Any) -> None:
    """The converter crashes (SIGSEGV) on an inf and mis-ranges on a NaN: refuse both."""
    whole = isinstance(data, (np.ndarray, Mapping, tuple, list))
    source = ("the representative data" if whole
              else f"element {position} of the representative data")
    check_finite({spec.name: array for array, spec in zip(arrays, specs)},
                 error=CalibrationDataError, what="Representative data", source=source,
                 why="an infinity crashes the LiteRT converter and a NaN corrupts the "
                     "activation ranges it measures")


def calibration_samples(
    data: Any,
    specs: Sequence[InputSpec],
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
) -> list[list[np.ndarray]]:
    """Turns representative data into at most `num_samples` checked samples.

    Arrays are sampled evenly across their length (so data sorted by class still
    covers every class); datasets and generators are read in order.

    Args:
        data: representative data in any accepted form (see module docstring).
        specs: the model's inputs (`input_specs(model)`).
        num_samples: the sample budget.

    Returns:
        A list of samples; each sample holds one array per input, batch size 1.

    Raises:
        CalibrationDataError: the data is missing, empty, does not fit, or holds a
            NaN or an infinity (named with its index).

    Example:
        >>> specs = [InputSpec("x", (None, 4), "float32")]
        >>> samples = calibration_samples(np.zeros((10, 4)), specs, num_samples=3)
        >>> len(samples), samples[0][0].shape
        (3, (1, 4))
    """
    if data is None:
        raise CalibrationDataError(
            "This quantization mode measures activation ranges and needs "
            f"representative data: {_ACCEPTED}. Received: representative_data=None. "
            "Pass ~100-500 typical inputs, e.g. representative_data=x_train[:200]."
        )
    if not isinstance(num_samples, int) or num_samples < 1:
        raise CalibrationDataError(
            f"Expected num_samples to be a positive int. Received: num_samples={num_samples!r}"
        )
    samples: list[list[np.ndarray]] = []
    for position, element in enumerate(_iter_raw(data, len(specs))):
        arrays = _check_batch(_split_inputs(element, specs), specs)
        _check_finite(arrays, specs, position, data)
        rows = arrays[0].shape[0]
        if any(a.shape[0] != rows for a in arrays):
            raise CalibrationDataError(
                "Every input of a sample must have the same number of rows. "
                f"Received: {[a.shape[0] for a in arrays]} rows"
            )
        if rows > 1 and len(samples) == 0 and num_samples < rows:
            picks = np.unique(np.linspace(0, rows - 1, num_samples).round().astype(int))
        else:
            picks = range(rows)
        for r in picks:
            samples.append([a[r : r + 1] for a in arrays])
            if len(samples) >= num_samples:
                return samples
    if not samples:
        raise CalibrationDataError(
            "Representative data is empty. Expected at least one sample. "
            "Received: 0 samples"
        )
    return samples


def as_generator(
    samples: list[list[np.ndarray]], names: Sequence[str] | None = None
) -> Callable[[], Iterable[Any]]:
    """The converter's `representative_dataset` callable over checked samples.

    With `names` (the signature's input names) samples are fed as dicts: a
    file's tensor order need not follow the model's input order.
    """

    def gen():
        for sample in samples:
            yield dict(zip(names, sample)) if names else sample

    return gen
