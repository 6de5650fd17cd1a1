"""`to_onnx`: a Keras 3 model -> an ONNX file, optionally quantized by ONNX Runtime.

Export is Keras 3's own (``model.export(path, format="onnx")``, through tf2onnx
on the TensorFlow backend) of the plain model (kmot's wrappers stripped), traced
with static reshapes: a Flatten then reshapes to ``(-1, n)`` instead of reading
the batch size at run time, which also lets ONNX Runtime fuse every quantized
convolution (with the run-time shape, it left one in float). Quantization is ONNX
Runtime's: ``"dynamic"`` (`quantize_dynamic`: int8 weights, activations quantized
per call) or ``"int8"`` (`quantize_static` on representative data: int8 weights
and activations in QDQ format, per-channel weights). The ONNX packages are the
optional extra ``kmot[onnx]``, imported on first use.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kmot._files import atomic_path
from kmot._quiet import captured_output
from kmot._tempdirs import temporary_directory
from kmot.errors import ConversionError, KmotError
from kmot.export.calibration import DEFAULT_NUM_SAMPLES, calibration_samples, input_specs

__all__ = ["to_onnx", "ONNX_QUANTIZE_MODES", "require_onnx"]

#: quantize= values of `to_onnx`: None (float32), "dynamic", "int8".
ONNX_QUANTIZE_MODES = (None, "dynamic", "int8")


def require_onnx(*modules: str, purpose: str = "ONNX export") -> None:
    """Imports the optional ONNX packages, or says how to install them.

    Raises:
        KmotError: a package of the ``kmot[onnx]`` extra is not installed.
    """
    for module in modules or ("onnx", "onnxruntime", "tf2onnx"):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise KmotError(
                f"{purpose} needs the optional ONNX packages (onnx, onnxruntime, tf2onnx). "
                f'Install them with: pip install "kmot[onnx]". Received: '
                f"{type(err).__name__}: {err}"
            ) from err


def _check_options(path: Any, quantize: Any) -> Path:
    if quantize not in ONNX_QUANTIZE_MODES:
        raise KmotError(f"Expected quantize to be one of {list(ONNX_QUANTIZE_MODES)}. "
                        f"Received: quantize={quantize!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise KmotError(f"Expected path to be an .onnx file path. Received: {type(path).__name__}")
    path = Path(path)
    if path.suffix != ".onnx" or path.is_dir():
        raise KmotError(f"Expected path to name an .onnx file. Received: {path}"
                        + (", a folder" if path.is_dir() else ""))
    return path


def to_onnx(
    model: keras.Model | str | os.PathLike,
    path: str | os.PathLike,
    *,
    quantize: str | None = None,
    representative_data: Any = None,
    num_calibration_samples: int = DEFAULT_NUM_SAMPLES,
    opset: int | None = None,
    verify: bool = True,
) -> Path:
    """Exports a Keras 3 model, kmot's wrappers stripped, as ONNX, optionally quantized.

    A quantization-aware model (`kmot.quantization.quantize_model`) exports with its
    activation quantizers as QuantizeLinear/DequantizeLinear pairs: it is already
    an int8 model for ONNX Runtime (which quantizes its weights when loading), so
    it takes ``quantize=None``.

    Args:
        model: a Keras model or a path to a ``.keras`` file.
        path: the ``.onnx`` file to write (atomically).
        quantize: None (float32), ``"dynamic"`` (int8 weights; activations
            quantized on the fly at each call) or ``"int8"`` (int8 weights and
            activations, QDQ format, ranges calibrated on ``representative_data``).
        representative_data: typical inputs, needed by ``"int8"``: the forms
            `to_litert` accepts (an array, a tuple or dict of arrays, a dataset...).
        num_calibration_samples: how many samples calibration uses at most.
        opset: the ONNX opset (default: tf2onnx's).
        verify: load the file in ONNX Runtime and run it once.

    Returns:
        The file's path.

    Raises:
        CalibrationDataError: ``"int8"`` without representative data, or data not
            fitting the model.
        ConversionError: the export or the quantization failed, or the file does not run.
        KmotError: an invalid option, or the ``kmot[onnx]`` packages are missing.

    Example:
        >>> to_onnx(model, "model_int8.onnx", quantize="int8",
        ...         representative_data=x_train[:200])  # doctest: +SKIP
        PosixPath('model_int8.onnx')
    """
    from kmot.core import simulations
    from kmot.export.litert import load_model
    from kmot.export.saved_model import plain_model

    path = _check_options(path, quantize)
    require_onnx("onnx", "onnxruntime",
                 *(["tf2onnx"] if keras.backend.backend() == "tensorflow" else []))
    model = load_model(model)
    if quantize is not None and "activations" in simulations(model):
        raise KmotError(
            "This model is quantization-aware: it exports to ONNX with its own activation "
            "ranges as QuantizeLinear/DequantizeLinear, already int8 for ONNX Runtime. "
            f"Expected quantize=None. Received: quantize={quantize!r}"
        )
    samples = None
    if quantize == "int8":
        samples = calibration_samples(representative_data, input_specs(model),
                                      num_samples=num_calibration_samples)
    elif representative_data is not None:
        samples = calibration_samples(representative_data, input_specs(model), num_samples=1)
    model = plain_model(model)

    with temporary_directory("onnx") as work, atomic_path(path, suffix=".onnx") as tmp:
        if quantize is None:
            _export(model, tmp, opset)
        else:
            exported = Path(work) / "float.onnx"
            _export(model, exported, opset)
            _quantize(exported, tmp, quantize, samples, Path(work))
        if verify:
            _verify(tmp, samples[0] if samples else None)
    return path


def _export(model: keras.Model, target: Path, opset: int | None) -> None:
    import tensorflow as tf

    from kmot.export.saved_model import tensor_specs
    from kmot.export.static_shapes import static_batch_reshapes

    with captured_output() as log:
        try:
            with static_batch_reshapes():
                model.export(str(target), format="onnx", verbose=False,
                             input_signature=tensor_specs(tf, model), opset_version=opset)
        except Exception as err:  # noqa: BLE001 - tracing and tf2onnx raise many types
            failure = err
        else:
            failure = None
    if failure is not None or not target.is_file():
        tail = "\n".join(ln for ln in log[0].strip().splitlines()[-8:] if ln.strip())
        raise ConversionError(
            f"Model '{model.name}' could not be exported to ONNX (Keras 3's export, "
            f"tf2onnx). Expected every op to have an ONNX equivalent at opset "
            f"{opset if opset is not None else 'default'}. Received: "
            f"{type(failure).__name__}: {str(failure)[:2000]}\n{tail}"
        ) from failure


def _input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _quantize(source: Path, target: Path, mode: str, samples: list[list[np.ndarray]] | None,
              work: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Samples(CalibrationDataReader):
        """The checked calibration samples, fed by input name."""

        def __init__(self, names: list[str], data: list[list[np.ndarray]]):
            self._feeds = iter([dict(zip(names, sample)) for sample in data])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    prepared = work / "prepared.onnx"
    with captured_output() as log:
        try:
            # Shape inference and graph cleanup that ONNX Runtime asks for before
            # quantizing; ONNX's own shape inference suffices (no sympy).
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            if mode == "dynamic":
                quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
            else:
                assert samples is not None
                quantize_static(
                    str(prepared), str(target), _Samples(_input_names(prepared), samples),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
        except Exception as err:  # noqa: BLE001 - the quantizer raises many types
            failure = err
        else:
            failure = None
    if failure is not None:
        tail = "\n".join(ln for ln in log[0].strip().splitlines()[-8:] if ln.strip())
        raise ConversionError(
            f"ONNX Runtime could not quantize the model (quantize={mode!r}). Expected a "
            f"float ONNX graph it can quantize. Received: {type(failure).__name__}: "
            f"{str(failure)[:2000]}\n{tail}"
        ) from failure


def _verify(path: Path, sample: list[np.ndarray] | None) -> None:
    from kmot.export.onnx_runtime import ONNXModel

    runner = ONNXModel(path)
    if sample is None:
        sample = [np.zeros([1 if d is None else d for d in shape], dtype)
                  for shape, dtype in zip(runner.input_shapes, runner.input_dtypes)]
    try:
        runner.predict(sample, batch_size=1)
    except KmotError as err:
        raise ConversionError(
            "The ONNX file failed its first run in ONNX Runtime. Expected it to run on a "
            f"sample input. Received: {err}"
        ) from err

