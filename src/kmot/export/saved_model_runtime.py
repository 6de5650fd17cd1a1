"""Running a SavedModel: `tf.saved_model.load` and one serving signature.

TensorFlow's thread pools belong to the process and are fixed once it has run
anything, so a SavedModel runs with whatever the process has (by default, all
cores), like a Keras model in the same process.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from kmot.errors import ConversionError, ModelFileError
from kmot.export.saved_model import check_saved_model

__all__ = ["TFSavedModel", "natural_key"]

_DEFAULT = "serving_default"


def natural_key(name: str) -> list[tuple[int, int, str]]:
    """Sort key reading digit runs as numbers: ``output_2`` before ``output_10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


class TFSavedModel:
    """A SavedModel folder loaded in TensorFlow, ready to predict and be timed.

    Inputs and outputs are the signature's, ordered by name (digit runs as
    numbers), which for `to_saved_model` folders is the Keras model's order.

    Args:
        path: the SavedModel folder.
        signature: the signature to run (default: ``serving_default``, or the
            only one there is).

    Raises:
        ModelFileError: not a SavedModel folder, unloadable, or without the signature.

    Example:
        >>> runner = TFSavedModel("exported/digits")  # doctest: +SKIP
        >>> [logits] = runner.predict([x_test])        # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, signature: str | None = None):
        import tensorflow as tf

        self.path = check_saved_model(path)
        try:
            self._loaded = tf.saved_model.load(str(self.path))
        except Exception as err:  # noqa: BLE001 - a damaged folder fails in many ways
            first = (str(err).splitlines() or [""])[0][:300]
            raise ModelFileError(
                f"{self.path} could not be loaded as a SavedModel. Expected a complete "
                f"folder written by to_saved_model or tf.saved_model.save. Received: "
                f"{type(err).__name__}: {first}. Export the model again."
            ) from err
        signatures = dict(self._loaded.signatures)
        if signature is None:
            signature = _DEFAULT if _DEFAULT in signatures or len(signatures) != 1 else \
                next(iter(signatures))
        if signature not in signatures:
            raise ModelFileError(
                f"{self.path} has no signature {signature!r}. Expected one of "
                f"{sorted(signatures) or 'none'}. Received: signature={signature!r}"
            )
        self.function = signatures[signature]
        args, kwargs = self.function.structured_input_signature
        if args:
            raise ModelFileError(f"Signature {signature!r} of {self.path} takes positional "
                                 "inputs. Expected named inputs (a serving signature).")
        self.inputs = sorted(kwargs.items(), key=lambda item: natural_key(item[0]))
        outputs = self.function.structured_outputs
        if not isinstance(outputs, dict):
            outputs = {"output_0": outputs}
        self.outputs = sorted(outputs.items(), key=lambda item: natural_key(item[0]))
        self._tf = tf

    @property
    def input_names(self) -> list[str]:
        return [name for name, _ in self.inputs]

    @property
    def input_shapes(self) -> list[tuple[int | None, ...]]:
        return [tuple(spec.shape.as_list()) for _, spec in self.inputs]

    @property
    def input_dtypes(self) -> list[str]:
        return [spec.dtype.name for _, spec in self.inputs]

    @property
    def output_dtypes(self) -> list[str]:
        return [spec.dtype.name for _, spec in self.outputs]

    def _tensors(self, arrays: Sequence[np.ndarray]) -> dict[str, Any]:
        if len(arrays) != len(self.inputs):
            raise ConversionError(
                f"The SavedModel has {len(self.inputs)} input(s) {self.input_names}. Expected "
                f"one array per input. Received: {len(arrays)} array(s)")
        return {name: self._tf.constant(np.asarray(a, spec.dtype.as_numpy_dtype))
                for (name, spec), a in zip(self.inputs, arrays)}

    def _call(self, tensors: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.function(**tensors)
        except (self._tf.errors.OpError, ValueError, TypeError) as err:
            raise ConversionError(
                f"The SavedModel failed to run. Expected inputs "
                f"{list(zip(self.input_names, self.input_shapes))}. Received: "
                f"{type(err).__name__}: {str(err).splitlines()[0][:300]}") from err

    def predict(self, arrays: Sequence[np.ndarray], *, batch_size: int = 64) -> list[np.ndarray]:
        """Outputs (one array per signature output) on `arrays`, run in batches."""
        fixed = self.input_shapes[0][0] if self.inputs and self.input_shapes[0] else None
        size = fixed or batch_size
        n = len(arrays[0])
        chunks: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for start in range(0, n, size):
            out = self._call(self._tensors([a[start:start + size] for a in arrays]))
            for i, (name, _) in enumerate(self.outputs):
                chunks[i].append(np.asarray(out[name]))
        return [np.concatenate(c, axis=0) for c in chunks]

    def time_invoke(self, arrays: Sequence[np.ndarray], *, runs: int = 100,
                    warmup: int = 10) -> np.ndarray:
        """Latencies of the signature call alone, in ms: inputs are tensors made once.

        TensorFlow executes eagerly-called functions synchronously on the CPU, so
        the call returns once the outputs are computed; reading them is not timed.
        """
        tensors = self._tensors(arrays)
        for _ in range(warmup):
            self._call(tensors)
        times = np.empty(runs)
        for i in range(runs):
            start = time.perf_counter()
            self._call(tensors)
            times[i] = time.perf_counter() - start
        return times * 1e3

