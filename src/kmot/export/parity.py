"""Parity of a Keras model and its LiteRT file on the same data, op by op."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from kmot.core import OptimizedLayer
from kmot.core.selection import walk_layers
from kmot.errors import ConversionError
from kmot.export.calibration import calibration_samples, input_specs
from kmot.export.naming import layers_of_tensor
from kmot.export.runtime import LiteRTModel

__all__ = ["parity", "kernel_agreement", "ParityReport", "LayerParity"]


@dataclass(frozen=True)
class LayerParity:
    """One op's output in the file against the Keras layer (and quantizer) it came from."""

    layer: str
    op: str
    rmse: float
    max_abs_error: float
    max_error_steps: float  # max error in units of the tensor's quantization step


@dataclass(frozen=True)
class ParityReport:
    """How closely the LiteRT file reproduces the Keras model."""

    samples: int
    argmax_agreement: float
    max_abs_error: float
    rmse: float
    layers: tuple[LayerParity, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "layers"},
                "layers": [asdict(layer) for layer in self.layers]}


def _held_tensor_layers(model: keras.Model) -> dict[str, str]:
    """For each top-level layer, the layer whose output the file holds for it: the
    last of the layers simulating the deployment (activation fake quantizers)
    that follow it alone, or itself. A wrapper's inner layer maps like the wrapper."""
    held = {}
    for layer in model.layers:
        last = layer
        while len(last._outbound_nodes) == 1:
            consumer = last._outbound_nodes[0].operation
            if not getattr(consumer, "simulates_deployment", False):
                break
            last = consumer
        held[layer.name] = last.name
        if isinstance(layer, OptimizedLayer):
            held[layer.layer.name] = last.name
    return held


def _keras_outputs(model: keras.Model, names: list[str], x) -> dict[str, np.ndarray]:
    # Only top-level layers: a nested model's inner tensors are not outputs of `model`.
    layers = {layer.name: layer for layer in model.layers}
    wanted = [n for n in names if n in layers and len(layers[n]._inbound_nodes) == 1]
    probe = keras.Model(model.inputs, [layers[n].output for n in wanted])
    values = probe.predict(x, verbose=0, batch_size=256)
    values = values if isinstance(values, list) else [values]
    return dict(zip(wanted, (np.asarray(v) for v in values)))


def parity(
    model: keras.Model,
    tflite: str | os.PathLike | bytes,
    data: Any,
    *,
    num_samples: int = 500,
) -> ParityReport:
    """Runs `model` and its `.tflite` on the same inputs and compares them.

    Per layer, each compute op of the file is compared with the output of the
    Keras layer it came from, after that layer's activation quantizer when it
    has one (the tensor the file actually holds).

    Args:
        model: the Keras model (e.g. quantization-aware) the file was made from.
        tflite: its LiteRT file (path or bytes).
        data: inputs, in any form `to_litert` takes for representative data.
        num_samples: how many inputs to use at most.

    Returns:
        A `ParityReport`: argmax agreement of the outputs, output errors, and
        per-layer errors (also in quantization steps).

    Example:
        >>> report = parity(qat, "model.tflite", x_test)  # doctest: +SKIP
        >>> report.argmax_agreement >= 0.99              # doctest: +SKIP
    """
    specs = input_specs(model)
    samples = calibration_samples(data, specs, num_samples=num_samples)
    inputs = [np.concatenate([s[i] for s in samples]) for i in range(len(specs))]
    x = inputs if len(inputs) > 1 else inputs[0]
    keras_out = model.predict(x, verbose=0, batch_size=256)
    keras_out = keras_out[0] if isinstance(keras_out, list) else keras_out
    runner = LiteRTModel(tflite, preserve_all_tensors=True)
    values = runner.run_keeping_tensors(inputs)
    lite_out = values[runner.output_details[0]["index"]]
    err = np.asarray(lite_out, np.float64) - np.asarray(keras_out, np.float64)
    agreement = float(np.mean(np.argmax(lite_out, -1) == np.argmax(keras_out, -1)))

    names = {layer.name for layer in walk_layers(model)} | {model.name}
    names |= {layer.layer.name for layer in walk_layers(model) if isinstance(layer, OptimizedLayer)}
    held = _held_tensor_layers(model)
    details = {d["index"]: d for d in runner.interpreter.get_tensor_details()}
    matched: list[tuple[str, str, int]] = []
    for op in runner.interpreter._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or not op["outputs"]:
            continue
        out = op["outputs"][0]
        found = layers_of_tensor(details[out]["name"], names, model.name)
        if found:
            matched.append((held.get(found[-1], found[-1]), op["op_name"], out))
    reference = _keras_outputs(model, [m[0] for m in matched], x)
    rows = []
    for layer, op_name, index in matched:
        if layer not in reference or index not in values:
            continue
        ref, got = reference[layer], values[index]
        if ref.shape != got.shape:
            continue
        diff = np.abs(np.asarray(got, np.float64) - ref)
        scale = details[index]["quantization"][0] or 1.0
        rows.append(LayerParity(layer, op_name, float(np.sqrt(np.mean(diff**2))),
                                float(diff.max()), float(diff.max() / scale)))
    return ParityReport(
        samples=len(samples),
        argmax_agreement=agreement,
        max_abs_error=float(np.max(np.abs(err))),
        rmse=float(np.sqrt(np.mean(err**2))),
        layers=tuple(rows),
    )


def kernel_agreement(
    tflite: str | os.PathLike | bytes,
    data: Any,
    *,
    kernels: tuple[str, str] = ("default", "builtin"),
    num_samples: int = 500,
) -> float:
    """Argmax agreement of one `.tflite` file with itself under two LiteRT kernel sets.

    LiteRT's kernel sets (XNNPACK, its own optimized and its reference kernels)
    round int8 arithmetic differently. On a model that decides many inputs on
    near-ties, the same file then gives different answers on different runtimes,
    and this bounds what any Keras-vs-LiteRT `parity` can reach: an input on which
    the two kernel sets disagree is one on which the Keras model disagrees with at
    least one of them, so its agreements ``a`` and ``b`` with the two obey
    ``a + b <= 1 + k`` for a kernel agreement ``k``. Below ``k = 0.98`` no
    simulation agrees with both at 0.99.

    Args:
        tflite: the LiteRT file (path or bytes).
        data: an array, or a list of arrays (one per input), with a batch axis.
        kernels: the two kernel sets compared (see `LiteRTModel`).
        num_samples: how many inputs to use at most.

    Returns:
        The fraction of inputs (0 to 1) on which both give the same argmax.

    Example:
        >>> kernel_agreement("model.tflite", x_test)   # doctest: +SKIP
        0.982
    """
    first = LiteRTModel(tflite, kernels=kernels[0])
    arrays = first._as_list(data)
    n = len(arrays[0])
    if n == 0:
        raise ConversionError("kernel_agreement needs at least one input. Received: an empty array")
    picked = np.unique(np.linspace(0, n - 1, min(n, num_samples)).astype(int))
    x = [np.asarray(a)[picked] for a in arrays]
    answers = []
    for runner in (first, LiteRTModel(tflite, kernels=kernels[1])):
        out = runner.predict(x)
        answers.append(np.argmax(out[0] if isinstance(out, list) else out, axis=-1))
    return float(np.mean(answers[0] == answers[1]))
