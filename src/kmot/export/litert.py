"""`to_litert`: Keras 3 model -> LiteRT flatbuffer, with post-training quantization.

TensorFlow is imported here, on first use, never at `import kmot`.
"""

from __future__ import annotations

import functools
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kmot._files import write_atomic
from kmot._quiet import captured_output as _captured_output
from kmot._tempdirs import temporary_directory
from kmot.errors import ConversionError, KmotError, ModelFileError
from kmot.export.calibration import (
    DEFAULT_NUM_SAMPLES,
    as_generator,
    calibration_samples,
    input_specs,
)
from kmot.export.naming import layer_names, layers_of_tensor
from kmot.export.layer_norm import centered_layer_norms
from kmot.export.recurrent import unrolled_recurrences
from kmot.export.static_shapes import static_batch_reshapes

__all__ = ["to_litert", "QUANTIZE_MODES", "write_atomic", "load_model", "signature_names"]

#: quantize= values: None (float32), and the post-training modes.
QUANTIZE_MODES = (None, "float16", "dynamic", "int8", "int16x8")
_CALIBRATED = ("int8", "int16x8")
_IO_TYPES = {
    None: ("float32",),
    "float16": ("float32",),
    "dynamic": ("float32",),
    "int8": ("float32", "int8", "uint8"),
    "int16x8": ("float32", "int16"),
}


def load_model(model: keras.Model | str | os.PathLike) -> keras.Model:
    """A Keras model, or one loaded from a ``.keras`` file in Keras safe mode.

    A model file is not trusted: it is loaded with ``safe_mode=True`` (a Lambda
    layer's Python code is refused, never run) and every way it can fail to load
    is reported in kmot's words.

    Args:
        model: a `keras.Model`, or the path of a ``.keras`` file.

    Returns:
        The model (loaded without its training configuration).

    Raises:
        ModelFileError: the file is missing, a folder, not a ``.keras`` archive,
            damaged, holds unregistered classes, or needs unsafe deserialization.
        KmotError: ``model`` is neither a model nor a path.

    Example:
        >>> model = load_model("model.keras")  # doctest: +SKIP
    """
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load_keras_file(Path(model))
    raise KmotError(
        f"Expected a keras.Model or a path to a .keras file. Received: {type(model).__name__}"
    )


def _load_keras_file(path: Path) -> keras.Model:
    if not path.exists():
        raise ModelFileError(
            f"No such model file. Expected a path to a .keras file. Received: {path}"
        )
    if path.is_dir():
        raise ModelFileError(
            "Expected a Keras 3 model saved as a .keras file (model.save('m.keras')). "
            f"Received: {path}, a folder. Pass the .keras file itself."
        )
    if path.suffix != ".keras":
        raise ModelFileError(
            "Expected a Keras 3 model saved as .keras (model.save('m.keras')). "
            f"Received: {path.name}"
        )
    with open(path, "rb") as f:  # an unreadable file is the OS's error, with its path
        head = f.read(4)
    if not head or not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path.name} is not a readable .keras archive. Expected a complete zip archive "
            f"written by model.save('m.keras'). Received: {path.stat().st_size:,} bytes "
            f"starting with {head!r}. Save the model again, or copy the whole file."
        )
    import kmot.core  # noqa: F401 - registers kmot's serializable classes

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - a model file can fail to load in many ways
        text = str(err)
        if "safe_mode" in text or "arbitrary code" in text:
            raise ModelFileError(
                f"{path.name} holds Python code (e.g. a Lambda layer), and kmot loads "
                "model files in Keras safe mode (safe_mode=True): the code is refused, "
                "never run. Expected a model built from Keras layers or registered "
                "custom layers. Received: a model needing unsafe deserialization. Replace "
                "the Lambda with a layer subclass registered with "
                "keras.saving.register_keras_serializable, or, if you trust the file, load "
                "it yourself with keras.saving.load_model(path, safe_mode=False) and pass "
                "the model to the Python API."
            ) from None
        first = (text.splitlines() or [""])[0][:300]
        raise ModelFileError(
            f"{path.name} is not a loadable .keras model. Expected the archive of a model "
            "whose layers are Keras built-ins or registered custom classes. Received: "
            f"{type(err).__name__}: {first}. Save the model again; for custom layers, "
            "import the module that registers them before loading."
        ) from err


_NOISE = ("Saved artifact", "TensorSpec(", "Endpoint '", "Captures:", "Output Type:",
          "The following endpoints", "warnings.warn(")


def _tail(text: str, lines: int = 12) -> str:
    """The converter log's last informative lines (not Keras's export listing)."""
    kept = [ln for ln in text.splitlines() if ln.strip() and not any(n in ln for n in _NOISE)]
    return "\n".join(kept[-lines:])


def _check_options(quantize, inference_input_type, inference_output_type, keep_float):
    if quantize not in QUANTIZE_MODES:
        raise KmotError(
            f"Expected quantize to be one of {list(QUANTIZE_MODES)}. "
            f"Received: quantize={quantize!r}"
        )
    for arg, value in (("inference_input_type", inference_input_type),
                       ("inference_output_type", inference_output_type)):
        if value not in _IO_TYPES[quantize]:
            raise KmotError(
                f"With quantize={quantize!r}, {arg} must be one of "
                f"{list(_IO_TYPES[quantize])}. Received: {arg}={value!r}"
            )
    if keep_float and quantize not in _CALIBRATED:
        raise KmotError(
            "keep_float= (selective quantization) applies to quantize='int8' or "
            f"'int16x8'. Received: quantize={quantize!r}, keep_float={list(keep_float)}"
        )


def _tf_dtype(tf, name: str):
    return {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}[name]


def _denylisted_nodes(calibrated: bytes, model: keras.Model, keep_float: Sequence[str]) -> list[str]:
    """Output-tensor names of the ops that implement the `keep_float` layers."""
    from kmot.export.inspect import inspect

    names = layer_names(model)
    unknown = [n for n in keep_float if n not in names]
    if unknown:
        raise KmotError(
            f"keep_float names layers the model does not have. Expected names from "
            f"{sorted(names)}. Received: {unknown}"
        )
    info = inspect(calibrated)
    # Output tensors carry no layer scope: they are named after the model's outputs.
    output_layers = {t.name: t_keras._keras_history.operation.name
                     for t, t_keras in zip(info.outputs, model.outputs)}
    nodes, matched = [], set()
    for op in info.ops:
        for t in op.outputs:
            found = layers_of_tensor(t.name, names, model.name) or [output_layers.get(t.name)]
            hit = set(found) & set(keep_float)
            if hit:
                nodes.append(t.name)
                matched |= hit
    missing = [n for n in keep_float if n not in matched]
    if missing:
        raise KmotError(
            f"No LiteRT op was found for layer(s) {missing} (a layer without compute, "
            "e.g. Dropout or Flatten, leaves no op to keep in float). Expected layers "
            f"that compute (Conv2D, Dense, ...). Received: keep_float={list(keep_float)}"
        )
    return nodes


def _verify(content: bytes, sample: list[np.ndarray] | None) -> None:
    from kmot.export.runtime import LiteRTModel

    runner = LiteRTModel(content)
    if sample is None:
        sample = [
            np.zeros([max(int(s), 1) for s in d["shape"]], dtype=np.float32)
            for d in runner.input_details
        ]
    try:
        runner.predict(sample)
    except (ValueError, RuntimeError) as err:
        raise ConversionError(
            "The converted model failed its first run in the LiteRT interpreter. "
            f"Expected it to run on a sample input. Received: {err}"
        ) from err


def to_litert(
    model: keras.Model | str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    representative_data: Any = None,
    num_calibration_samples: int = DEFAULT_NUM_SAMPLES,
    inference_input_type: str = "float32",
    inference_output_type: str = "float32",
    keep_float: Iterable[str] = (),
    allow_float_fallback: bool = False,
    allow_select_tf_ops: bool = False,
    verify: bool = True,
    input_shapes: Sequence[Sequence[int | None]] | None = None,
    fused_lstm: bool = False,
) -> bytes:
    """Converts a Keras 3 model to a LiteRT flatbuffer, optionally quantized.

    Args:
        model: a Keras model or a path to a ``.keras`` file.
        path: where to write the ``.tflite`` (atomically); None writes nothing.
        quantize: None (float32), ``"float16"`` (float16 weights),
            ``"dynamic"`` (int8 weights, float activations), ``"int8"`` (full
            integer: int8 weights and activations) or ``"int16x8"`` (int16
            activations, int8 weights).
        representative_data: samples of real inputs, needed by ``"int8"`` and
            ``"int16x8"`` to measure activation ranges: a NumPy array, a tuple of
            arrays (multi-input), a dict keyed by input name, a ``tf.data.Dataset``
            or a callable returning an iterable of samples.
        num_calibration_samples: how many samples calibration uses at most.
        inference_input_type / inference_output_type: the file's I/O dtype:
            ``"float32"`` (default), ``"int8"``/``"uint8"`` with ``"int8"``,
            ``"int16"`` with ``"int16x8"``.
        keep_float: names of layers to leave in float32 inside an int8 / int16x8
            model (selective quantization; see `quantization_error` to find them).
        allow_float_fallback: with int8/int16x8, let ops that have no integer
            kernel stay float instead of failing the conversion.
        allow_select_tf_ops: allow TensorFlow ops the LiteRT builtins lack (the
            file then needs the Flex delegate at run time).
        verify: load the result in the LiteRT interpreter and run it once.
        input_shapes: for a subclassed model (no symbolic inputs): one shape per
            input, batch first (``[(None, 8, 8, 1)]``). Default: the shapes it was
            built with; a model never called or built needs it.
        fused_lstm: each LSTM becomes one UNIDIRECTIONAL_SEQUENCE_LSTM op (LiteRT's
            fused kernel; int8 keeps its cell state in int16) instead of its steps
            unrolled. The converter fuses only at a fixed batch size, so the file takes
            batch 1 (or the model's own fixed batch). The fused op keeps its state
            between invocations: reset it before each sequence
            (``interpreter.reset_all_variables()``; `LiteRTModel` does). Not with
            ``"int16x8"``, which the converter has no fused kernel for.

    Returns:
        The flatbuffer bytes.

    On the jax and torch backends the model is converted in a child process on
    the TensorFlow backend (see `kmot.export.backend_bridge`): same options,
    same file, same errors.

    Raises:
        CalibrationDataError: representative data missing, or not fitting the model.
        ConversionError: the converter or the interpreter rejected the model.
        KmotError: an invalid option.

    Example:
        >>> content = to_litert(model, "model.tflite", quantize="int8",
        ...                     representative_data=x_train[:200])  # doctest: +SKIP
    """
    keep_float = [keep_float] if isinstance(keep_float, str) else list(keep_float)
    from kmot.export.backend_bridge import (
        needs_tensorflow_process,
        to_litert_in_tensorflow,
    )

    if needs_tensorflow_process():  # jax / torch: converted in a TensorFlow process
        return to_litert_in_tensorflow(
            model, path, representative_data=representative_data,
            num_calibration_samples=num_calibration_samples, input_shapes=input_shapes,
            quantize=quantize, inference_input_type=inference_input_type,
            inference_output_type=inference_output_type, keep_float=keep_float,
            allow_float_fallback=allow_float_fallback,
            allow_select_tf_ops=allow_select_tf_ops, verify=verify, fused_lstm=fused_lstm)
    model = _as_graph(load_model(model), input_shapes)
    model, quantize, qat = _prepare_quantization_aware(model, quantize)
    _check_options(quantize, inference_input_type, inference_output_type, keep_float)
    if qat and keep_float:
        raise KmotError(
            "keep_float= selects float layers at conversion; a quantization-aware model "
            "decides that when it is prepared: quantize_model(model, config={name: 'skip'}). "
            f"Received: keep_float={keep_float}"
        )
    _check_recurrent(model, allow_select_tf_ops)
    fused = _fused_lstm_layers(model, fused_lstm, quantize)
    samples = None
    if quantize in _CALIBRATED and not qat:
        samples = calibration_samples(
            representative_data, input_specs(model), num_samples=num_calibration_samples
        )
    elif representative_data is not None:
        # Not needed for calibration, but a good first-run input; checked all the same.
        samples = calibration_samples(representative_data, input_specs(model), num_samples=1)

    import tensorflow as tf

    with temporary_directory("export") as saved_model_dir:
        with _captured_output() as log:
            try:
                _write_saved_model(tf, model, saved_model_dir, fused=fused)
            except Exception as err:  # noqa: BLE001 - tracing raises many types
                failure = err
            else:
                failure = None
        if failure is not None:
            raise ConversionError(
                f"Model '{model.name}' could not be traced for export (inference "
                "call, training=False). Expected every layer to run in a "
                "tf.function on the TensorFlow backend. "
                f"Received: {type(failure).__name__}: {str(failure)[:2000]}\n{_tail(log[0])}"
            ) from failure
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=["serve"]
        )
        content = _convert(
            tf, converter, model, None, quantize=quantize, samples=samples, qat=qat,
            inference_input_type=inference_input_type,
            inference_output_type=inference_output_type, keep_float=keep_float,
            allow_float_fallback=allow_float_fallback,
            allow_select_tf_ops=allow_select_tf_ops, verify=verify,
        )
    if fused:
        _check_fused(content, model, fused, samples, quantize)
    if path is not None:
        write_atomic(path, content)
    return content


def signature_names(model: keras.Model) -> list[str]:
    """The LiteRT signature names of the model's inputs, in Keras input order.

    Input names come from the Keras Input layers. The converter orders a file's
    inputs by name; where the names do not sort in the Keras order, an index
    prefix (``i0_``, ``i1_``, ...) keeps the file's order equal to the model's.
    """
    names = []
    for i, t in enumerate(model.inputs):
        history = getattr(t, "_keras_history", None)
        name = history.operation.name if history else f"input_{i}"
        names.append(re.sub(r"[^A-Za-z0-9_]", "_", name))
    if names != sorted(names) or len(set(names)) != len(names):
        width = len(str(len(names) - 1))
        names = [f"i{i:0{width}d}_{n}" for i, n in enumerate(names)]
    return names


def _write_saved_model(tf, model: keras.Model, directory: str, *, fused=()) -> None:
    """Exports the inference call (training=False) as a SavedModel 'serve' signature;
    with `fused` LSTMs (see `kmot.export.fused_lstm`) at a fixed batch, 1 by default."""
    from kmot.export.fused_lstm import fused_lstms

    archive = keras.export.ExportArchive()
    archive.track(model)
    specs = [
        tf.TensorSpec((t.shape[0] or 1, *t.shape[1:]) if fused else t.shape, t.dtype, name=name)
        for t, name in zip(model.inputs, signature_names(model))
    ]
    signature = [specs] if len(specs) > 1 else specs
    # one RESHAPE, not SHAPE+STRIDED_SLICE+PACK+RESHAPE; LSTM/GRU as builtin ops, no Flex;
    # LayerNormalization without NEG (no int8 kernel)
    with static_batch_reshapes(), unrolled_recurrences(model), centered_layer_norms(), \
            fused_lstms(list(fused)):
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False), signature)
        archive.write_out(directory, verbose=False)


def _as_graph(model, input_shapes):
    """A model with symbolic inputs: a subclassed one traced (at `input_shapes`, or the
    shapes it was built with) into a Functional copy; the others as they are."""
    from kmot.core import as_functional, is_graph_model
    from kmot.errors import UnsupportedModelError

    if is_graph_model(model):
        if input_shapes is not None:
            raise KmotError(
                "input_shapes= is for models without symbolic inputs (subclassed models). "
                f"Expected it unset for model '{model.name}', whose inputs are "
                f"{[tuple(t.shape) for t in model.inputs]}. Received: input_shapes="
                f"{input_shapes!r}")
        return model
    if input_shapes is not None:
        shapes = list(input_shapes)
        if not shapes or not all(isinstance(s, (list, tuple)) and len(s) >= 1 and all(
                d is None or (isinstance(d, int) and d > 0) for d in s) for s in shapes):
            raise KmotError(
                "Expected input_shapes as a list of shapes, one per input, batch first, "
                "e.g. [(None, 8, 8, 1)]. Received: input_shapes=" f"{input_shapes!r}")
        import numpy as np

        zeros = [np.zeros([1 if d is None else d for d in s], "float32") for s in shapes]
        model(zeros[0] if len(zeros) == 1 else zeros, training=False)  # builds it
    try:
        return as_functional(model)
    except UnsupportedModelError as err:
        if input_shapes is None and not model.built:
            raise KmotError(
                f"Model '{model.name}' ({type(model).__name__}) is subclassed and was never "
                "built, so its input shapes are unknown. Expected input_shapes=[(None, "
                "...)], one shape per input, or a model called once on data. Received: an "
                "unbuilt subclassed model") from err
        raise


def _fused_lstm_layers(model, fused_lstm: bool, quantize: str | None) -> list:
    """The LSTMs to export fused (see `to_litert`'s ``fused_lstm``), checked."""
    if not fused_lstm:
        return []
    from kmot.export.fused_lstm import fusable_lstms

    if quantize == "int16x8":
        raise KmotError(
            "fused_lstm=True cannot be combined with quantize='int16x8': the converter has "
            "no 16x8 kernel for UNIDIRECTIONAL_SEQUENCE_LSTM. Expected quantize=None, "
            "'float16', 'dynamic' or 'int8', or fused_lstm=False (the LSTM unrolled, which "
            "int16x8 supports). Received: quantize='int16x8'")
    fused, other = fusable_lstms(model)
    if not fused:
        reasons = "; ".join(f"{name}: {why}" for name, why in other.items()) or "no LSTM layer"
        raise KmotError(
            f"fused_lstm=True, but model '{model.name}' has no LSTM that LiteRT's fused op "
            "computes. Expected a keras.layers.LSTM (alone or in Bidirectional) with tanh "
            "and sigmoid activations, not stateful, without return_state (a "
            "quantization-aware model's LSTMs export unrolled). Received: " + reasons)
    batches = {t.shape[0] for t in model.inputs} - {None, 1}
    if batches:
        raise KmotError(
            f"fused_lstm=True exports at batch size 1, but model '{model.name}' fixes its "
            f"batch to {sorted(batches)}. Expected keras.Input(..., batch_size=1) or no "
            f"batch_size. Received: batch sizes {sorted(batches)}")
    if other:
        import warnings

        warnings.warn(f"fused_lstm=True: {', '.join(other)} stay unrolled ("
                      + "; ".join(f"{n}: {w}" for n, w in other.items()) + ").", stacklevel=3)
    return fused


def _check_fused(content: bytes, model, fused: list, samples, quantize) -> None:
    """Every LSTM asked to be fused is one op in the file (the converter, when it
    cannot fuse, keeps the unrolled body without a word), and the file computes the
    model: stacked fused int8 LSTMs can come out constant (TF 2.21's converter)."""
    from kmot.export.inspect import inspect
    from kmot.export.runtime import LiteRTModel

    count = sum(op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM" for op in inspect(content).ops)
    if count < len(fused):
        raise ConversionError(
            f"fused_lstm=True: the converter fused {count} of the {len(fused)} LSTMs of "
            f"model '{model.name}' ({', '.join(layer.name for layer in fused)}). Expected "
            "each as one UNIDIRECTIONAL_SEQUENCE_LSTM; an LSTM fed through a mask (Masking, "
            "mask_zero=True) or of unknown length cannot be. Pass fused_lstm=False for "
            f"the unrolled LSTM. Received: {count} fused op(s)")
    if not samples:
        return
    x = [np.concatenate(parts) for parts in zip(*samples[:64])]
    x = x[0] if len(x) == 1 else x
    expected = model.predict(x, verbose=0, batch_size=64)
    got = LiteRTModel(content).predict(x)
    expected, got = ([expected], [got]) if not isinstance(expected, list) else (expected, got)
    for want, have in zip(expected, got):
        spread = float(np.std(want))
        error = float(np.sqrt(np.mean((np.asarray(have) - want) ** 2)))
        if spread > 0 and error > 0.5 * spread:
            raise ConversionError(
                f"fused_lstm=True, quantize={quantize!r}: the file does not compute model "
                f"'{model.name}' on its calibration samples (error {error:.3g} against an "
                f"output spread of {spread:.3g}). Expected an error well under the spread. "
                "The converter's int8 fused LSTMs can come out wrong when stacked (seen "
                "with few calibration samples, and with an LSTM without bias): pass more "
                "representative_data (hundreds of samples), or fused_lstm=False (the LSTM "
                f"unrolled). Received: {len(samples)} calibration sample(s)")


def _check_recurrent(model, allow_select_tf_ops: bool) -> None:
    """Recurrent layers need a fixed number of time steps for builtin ops (see
    `kmot.export.recurrent`); without one only TensorFlow (Flex) ops can run them."""
    if allow_select_tf_ops:
        return
    from kmot.export.recurrent import recurrent_layers, unrolled_recurrences

    if not recurrent_layers(model):
        return
    with unrolled_recurrences(model) as looping:
        pass
    if looping:
        raise ConversionError(
            f"Recurrent layer(s) {looping} of model '{model.name}' have no fixed number of "
            "time steps, so LiteRT's builtin ops cannot run them (the converter would need "
            "TensorFlow ops, which the LiteRT interpreter lacks). Expected an input with a "
            "known sequence length, e.g. keras.Input((40, features)) (pad or crop sequences "
            "to it), or allow_select_tf_ops=True for a runtime with the Flex delegate. "
            f"Received: time steps None in {looping}")


def _prepare_quantization_aware(model, quantize):
    """Models that simulate their quantization: int8 from their own ranges when
    activations are simulated; weight-only simulation: stripped for int16x8."""
    from kmot.core import find_wrappers, simulations, strip

    simulated = simulations(model)
    if "activations" in simulated:
        if quantize not in (None, "int8"):
            raise KmotError(
                "This model is quantization-aware (int8): it exports as int8 with the "
                "ranges it learned. Expected quantize=None or 'int8'. "
                f"Received: quantize={quantize!r}"
            )
        baked = lambda t: not t.simulates_deployment  # noqa: E731
        if any(baked(t) for w in find_wrappers(model)
               for chain in w.transforms.values() for t in chain):
            # Bake masks and clusters into the weights: the converter then sees
            # constant weights under FakeQuant, not the ops that computed them.
            model = strip(model, transforms=baked)
        return model, "int8", True
    if "weights" in simulated:
        if quantize not in ("int16x8", "int8"):
            raise KmotError(
                "This model was prepared with quantize_model(scheme='int16x8'): its weights "
                "are trained for int8 but its activations still need calibration. Expected "
                "quantize='int16x8' with representative_data. "
                f"Received: quantize={quantize!r}"
            )
        return strip(model), quantize, False  # weights land on their int8 grid
    if find_wrappers(model):  # masks and clusters baked: constant weights, no mask ops
        return strip(model), quantize, False
    return model, quantize, False


def _convert(tf, converter, model, path, *, quantize, samples, qat, inference_input_type,
             inference_output_type, keep_float, allow_float_fallback,
             allow_select_tf_ops, verify) -> bytes:
    ops = {tf.lite.OpsSet.TFLITE_BUILTINS}
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if qat:  # ranges come from the model's FakeQuant ops: no calibration
        converter.inference_input_type = _tf_dtype(tf, inference_input_type)
        converter.inference_output_type = _tf_dtype(tf, inference_output_type)
    elif quantize in _CALIBRATED:
        converter.representative_dataset = as_generator(samples, signature_names(model))
        if quantize == "int8":
            strict = tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        else:
            strict = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ops = {strict, tf.lite.OpsSet.TFLITE_BUILTINS} if allow_float_fallback or keep_float else {strict}
        converter.inference_input_type = _tf_dtype(tf, inference_input_type)
        converter.inference_output_type = _tf_dtype(tf, inference_output_type)
        if keep_float:
            converter._experimental_calibrate_only = True  # quantized below, selectively
    if allow_select_tf_ops:
        ops.add(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops

    with _captured_output() as log:
        try:
            content = converter.convert()
            if keep_float:
                content = _quantize_selectively(
                    tf, content, model, keep_float, quantize,
                    inference_input_type, inference_output_type,
                )
        except KmotError:
            raise
        except Exception as err:  # noqa: BLE001 - the converter raises many types
            failure = err
        else:
            failure = None
    if failure is not None:
        hint = ""
        if quantize in _CALIBRATED and not allow_float_fallback and not qat:
            hint = (" If some op has no integer kernel, pass allow_float_fallback=True "
                    "or keep_float=[layer names].")
        if "NEEDS_FLEX_OPS" in str(failure) and not allow_select_tf_ops:
            hint += (" Ops missing from the LiteRT builtins can run as TensorFlow ops "
                     "with allow_select_tf_ops=True (needs the Flex delegate).")
        raise ConversionError(
            f"The LiteRT converter rejected the model (quantize={quantize!r}).{hint} "
            f"Received: {type(failure).__name__}: {str(failure)[:2000]}\n"
            f"Converter log (last lines):\n{_tail(log[0])}"
        ) from failure

    if quantize in _CALIBRATED and not (allow_float_fallback or keep_float):
        _check_fully_quantized(content, quantize)
    if verify:
        _verify(content, samples[0] if samples else None)
    if path is not None:
        write_atomic(path, content)
    return content


def _check_fully_quantized(content: bytes, quantize: str) -> None:
    """The converter may leave ops it cannot quantize in float without a word."""
    from kmot.export.inspect import inspect

    floats = inspect(content).float_ops_between_io()
    if floats:
        listed = ", ".join(f"#{op.index} {op.name}" for op in floats[:10])
        raise ConversionError(
            f"quantize={quantize!r} asks for a fully integer model, but the converter "
            f"left {len(floats)} op(s) in float: {listed}. Expected no float compute "
            "op between the input and the output. Pass allow_float_fallback=True to "
            "accept them, or replace those operations in the model. "
            f"Received: {len(floats)} float op(s)"
        )


def _quantize_selectively(tf, calibrated, model, keep_float, quantize, in_type, out_type):
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.python.framework import dtypes

    nodes = _denylisted_nodes(calibrated, model, keep_float)
    kwargs = {}
    if quantize == "int16x8":
        from tensorflow.lite.python.convert import _types_pb2

        kwargs["inference_type"] = _types_pb2.QUANTIZED_INT16
    return tf_convert.mlir_quantize(
        calibrated,
        fully_quantize=in_type != "float32" or out_type != "float32",
        input_data_type=dtypes.as_dtype(in_type),
        output_data_type=dtypes.as_dtype(out_type),
        denylisted_nodes=nodes,
        **kwargs,
    )
