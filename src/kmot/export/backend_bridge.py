"""Exporting from a JAX or PyTorch process: the conversion runs under TensorFlow.

The LiteRT converter reads TensorFlow graphs. On the jax backend kmot's fake
quantization does not trace to TensorFlow's FakeQuant ops (a QAT model would
come out with float ops), and on the torch backend Keras cannot export at all.
So when the calling process's backend is not TensorFlow, `to_litert` saves the
model as ``.keras`` in a temporary folder and converts it in a child process
started with ``KERAS_BACKEND=tensorflow``, with the same options. The weights are
the same numbers whichever backend trained them, so the file is the one a
TensorFlow process would write. Representative data is resolved to its samples
in the caller (a generator runs once, where it was made) and handed over as an
``.npz``; a `KmotError` raised in the child is raised again in the caller, with
its class and message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kmot import errors
from kmot._tempdirs import temporary_directory
from kmot.errors import ConversionError, KmotError

__all__ = ["needs_tensorflow_process", "to_litert_in_tensorflow"]

_REQUEST, _RESULT, _ERROR = "request.json", "model.tflite", "error.json"


def needs_tensorflow_process() -> bool:
    """True when this process's Keras backend is not TensorFlow."""
    import keras

    return keras.backend.backend() != "tensorflow"


def _save(model, path: Path) -> None:
    try:
        model.save(path)
    except Exception as err:  # saving raises many types
        raise ConversionError(
            f"Model '{model.name}' could not be saved as .keras, which exporting from the "
            "jax or torch backend needs (the conversion runs in a TensorFlow process). "
            "Expected layers that Keras can serialize (built-ins, or custom classes "
            "registered with keras.saving.register_keras_serializable). "
            f"Received: {type(err).__name__}: {str(err)[:500]}. Register the custom "
            "classes, or export from a process started with KERAS_BACKEND=tensorflow."
        ) from err


def to_litert_in_tensorflow(model, path, *, representative_data: Any,
                            num_calibration_samples: int, input_shapes, **options) -> bytes:
    """`to_litert` for a process whose backend is not TensorFlow (see module doc)."""
    from kmot._files import write_atomic
    from kmot.export.calibration import calibration_samples, input_specs
    from kmot.export.litert import _as_graph, load_model

    model = _as_graph(load_model(model), input_shapes)
    with temporary_directory("export-bridge") as folder:
        folder = Path(folder)
        _save(model, folder / "model.keras")
        request = {"options": options, "num_calibration_samples": num_calibration_samples,
                   "samples": None}
        if representative_data is not None:
            samples = calibration_samples(representative_data, input_specs(model),
                                          num_samples=num_calibration_samples)
            arrays = [np.concatenate(parts) for parts in zip(*samples)]
            np.savez(folder / "samples.npz", *arrays)
            request["samples"] = len(arrays)
            request["num_calibration_samples"] = len(samples)
        (folder / _REQUEST).write_text(json.dumps(request))
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        done = subprocess.run([sys.executable, "-m", __name__, str(folder)], env=env,
                              capture_output=True, text=True, check=False)
        if (folder / _ERROR).exists():
            failure = json.loads((folder / _ERROR).read_text())
            kind = getattr(errors, failure["type"], None)
            if not (isinstance(kind, type) and issubclass(kind, KmotError)):
                kind = KmotError
            raise kind(failure["message"])
        if done.returncode != 0 or not (folder / _RESULT).exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
            raise ConversionError(
                "The TensorFlow process that converts models from the "
                f"{_backend()} backend failed. Expected it to write the LiteRT file. "
                f"Received: exit code {done.returncode}\n{tail}")
        content = (folder / _RESULT).read_bytes()
    if path is not None:
        write_atomic(path, content)
    return content


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _child(folder: Path) -> None:
    """Runs in the TensorFlow process: converts, writes the file or the error."""
    from kmot.export.litert import to_litert

    request = json.loads((folder / _REQUEST).read_text())
    data = None
    if request["samples"]:
        with np.load(folder / "samples.npz") as stored:
            arrays = [stored[f"arr_{i}"] for i in range(request["samples"])]
        data = arrays[0] if len(arrays) == 1 else tuple(arrays)
    try:
        to_litert(folder / "model.keras", folder / _RESULT, representative_data=data,
                  num_calibration_samples=request["num_calibration_samples"],
                  **request["options"])
    except KmotError as err:
        (folder / _ERROR).write_text(json.dumps({"type": type(err).__name__,
                                                 "message": str(err)}))


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
