"""`to_saved_model`: a Keras 3 model -> a TensorFlow SavedModel folder, wrappers stripped.

The SavedModel holds the inference call (``serving_default``) of the *plain*
model: kmot's wrappers are stripped first, so a pruned kernel is stored with
its zeros and a clustered one with its shared values, and both show in the
folder's gzip size. TensorFlow is imported on first use, never at `import kmot`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kmot._quiet import captured_output
from kmot.errors import ConversionError, KmotError, ModelFileError
from kmot.export._folders import atomic_folder

__all__ = ["to_saved_model", "check_saved_model", "plain_model", "tensor_specs"]

_PROTOS = ("saved_model.pb", "saved_model.pbtxt")


def plain_model(model: keras.Model) -> keras.Model:
    """`model` without kmot's wrappers (their transforms baked into the weights).

    Activation quantizers of a quantization-aware model stay: they run as
    TensorFlow FakeQuant ops, so the exported model computes what QAT simulated.
    """
    from kmot.core import find_wrappers, strip

    return strip(model) if find_wrappers(model) else model


def tensor_specs(tf: Any, model: keras.Model) -> list[Any]:
    """The export input signature: one `tf.TensorSpec` per input, named as in LiteRT."""
    from kmot.export.litert import signature_names

    specs = [tf.TensorSpec(t.shape, t.dtype, name=name)
             for t, name in zip(model.inputs, signature_names(model))]
    return [specs] if len(specs) > 1 else specs


def check_saved_model(path: str | os.PathLike, *, error: type[KmotError] = ModelFileError) -> Path:
    """``path`` if it is a SavedModel folder (holds ``saved_model.pb``), else `error`.

    Raises:
        ModelFileError (or ``error``): missing, not a folder, or no ``saved_model.pb``.
    """
    path = Path(path)
    if not path.exists():
        raise error(f"No such SavedModel folder. Expected a folder written by "
                    f"to_saved_model or tf.saved_model.save. Received: {path}")
    if not path.is_dir():
        raise error(f"Expected a SavedModel folder (holding saved_model.pb). Received: "
                    f"{path}, a file. Pass the folder to_saved_model wrote.")
    if not any((path / name).is_file() for name in _PROTOS):
        listed = sorted(p.name for p in path.iterdir())[:8]
        raise error(
            f"{path} is not a SavedModel: it holds no saved_model.pb. Expected a folder "
            f"written by to_saved_model or tf.saved_model.save. Received: a folder holding "
            f"{listed or 'nothing'}"
        )
    return path


def _target(directory: Any) -> Path:
    if not isinstance(directory, (str, os.PathLike)):
        raise KmotError(f"Expected directory to be a folder path. Received: "
                        f"{type(directory).__name__}")
    path = Path(directory)
    if path.is_file() or (path.is_symlink() and not path.exists()):
        raise KmotError(f"Expected directory to be a folder to write the SavedModel into. "
                        f"Received: {path}, a file. Choose another path or remove the file.")
    if path.is_dir() and any(path.iterdir()):
        try:
            check_saved_model(path, error=KmotError)
        except KmotError:
            raise KmotError(
                f"{path} already holds files and is not a SavedModel, so it is not replaced. "
                "Expected a new or empty folder, or an earlier SavedModel to overwrite. "
                f"Received: a folder holding {sorted(p.name for p in path.iterdir())[:8]}"
            ) from None
    return path


def to_saved_model(
    model: keras.Model | str | os.PathLike,
    directory: str | os.PathLike,
    *,
    verify: bool = True,
) -> Path:
    """Exports a Keras 3 model, kmot's wrappers stripped, as a TensorFlow SavedModel.

    The folder holds one endpoint, ``serve`` (also ``serving_default``): the
    inference call, with one named input per model input (the names the LiteRT
    file of `to_litert` uses). It is written beside ``directory`` and renamed
    into place, so ``directory`` holds the whole SavedModel or is untouched; an
    earlier SavedModel there is replaced.

    Args:
        model: a Keras model or a path to a ``.keras`` file.
        directory: the folder to write (created; its parents too).
        verify: load the result with `tf.saved_model.load` and run it once.

    Returns:
        The folder's path.

    Raises:
        ModelFileError: ``model`` is a path that is not a loadable ``.keras`` file.
        ConversionError: the model could not be traced, or the result failed to run.
        KmotError: ``directory`` is a file, or a folder holding something else.

    Example:
        >>> to_saved_model(model, "exported/digits")  # doctest: +SKIP
        PosixPath('exported/digits')
    """
    from kmot.export.litert import load_model

    target = _target(directory)
    model = plain_model(load_model(model))

    import tensorflow as tf

    signature = tensor_specs(tf, model)
    with atomic_folder(target) as tmp:
        with captured_output() as log:
            try:
                model.export(str(tmp), format="tf_saved_model", verbose=False,
                             input_signature=signature)
            except Exception as err:  # noqa: BLE001 - tracing raises many types
                failure = err
            else:
                failure = None
        if failure is not None:
            tail = "\n".join(log[0].strip().splitlines()[-8:])
            raise ConversionError(
                f"Model '{model.name}' could not be exported as a SavedModel. Expected "
                "every layer to run in a tf.function on the TensorFlow backend. "
                f"Received: {type(failure).__name__}: {str(failure)[:2000]}\n{tail}"
            ) from failure
        if verify:
            _verify(tmp, model)
    return target


def _verify(folder: Path, model: keras.Model) -> None:
    from kmot.export.saved_model_runtime import TFSavedModel

    sample = [np.zeros([1 if d is None else d for d in t.shape], t.dtype)
              for t in model.inputs]
    try:
        TFSavedModel(folder).predict(sample, batch_size=1)
    except KmotError as err:
        raise ConversionError(
            "The SavedModel failed its first run in TensorFlow. Expected it to load and "
            f"run on a sample input. Received: {err}"
        ) from err
