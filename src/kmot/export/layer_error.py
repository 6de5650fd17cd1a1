"""Per-layer quantization error: where post-training quantization loses accuracy.

The float and the quantized LiteRT files of one model are run on the same inputs
with every intermediate tensor kept; each op's output in the quantized file is
dequantized and compared with the same tensor of the float file. The error
accumulates along the graph, so the layers to keep in float are those where the
signal-to-noise ratio drops sharply (see `QuantizationErrorReport.worst`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from kmot.export.calibration import DEFAULT_NUM_SAMPLES, calibration_samples, input_specs
from kmot.export.litert import load_model, to_litert
from kmot.export.naming import layer_names, layers_of_tensor
from kmot.export.runtime import LiteRTModel

__all__ = ["LayerError", "QuantizationErrorReport", "quantization_error"]


@dataclass(frozen=True)
class LayerError:
    """Error of one op's output in the quantized model against the float model."""

    op_index: int
    op: str
    tensor: str
    layers: tuple[str, ...]
    rmse: float
    snr_db: float  # 10*log10(signal power / error power); higher is better
    max_abs_error: float
    relative_rmse: float  # rmse / std of the float output
    input_snr_db: float  # the SNR of this op's inputs: what it inherited

    @property
    def snr_drop_db(self) -> float:
        """How much SNR this op loses itself (inherited error excluded)."""
        return min(self.input_snr_db, 200.0) - min(self.snr_db, 200.0)

    @property
    def label(self) -> str:
        return " + ".join(self.layers) or self.tensor


@dataclass(frozen=True)
class QuantizationErrorReport:
    """Per-op errors of a quantized model, in execution order."""

    quantize: str
    num_samples: int
    layers: tuple[LayerError, ...]

    def worst(self, n: int = 5) -> list[LayerError]:
        """The `n` ops that lose the most SNR themselves: the layers to keep float."""
        return sorted(self.layers, key=lambda r: -r.snr_drop_db)[:n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantize": self.quantize,
            "num_samples": self.num_samples,
            "layers": [asdict(r) | {"layers": list(r.layers)} for r in self.layers],
        }

    def format_table(self) -> str:
        lines = [f"{'#':>3}  {'op':<18} {'rmse':>10} {'snr dB':>8}  layer"]
        for r in self.layers:
            lines.append(f"{r.op_index:>3}  {r.op:<18} {r.rmse:>10.4g} {r.snr_db:>8.1f}  {r.label}")
        return "\n".join(lines)


def _run_all_tensors(content: bytes, inputs: list[np.ndarray]):
    """Runs a model keeping every tensor; returns runner, ops, tensor details, values."""
    runner = LiteRTModel(content, preserve_all_tensors=True)
    values = runner.run_keeping_tensors(inputs)
    details = {d["index"]: d for d in runner.interpreter.get_tensor_details()}
    return runner, runner.interpreter._get_ops_details(), details, values


def _errors(reference: np.ndarray, measured: np.ndarray) -> tuple[float, float, float, float]:
    """RMSE, SNR (dB), max |error| and RMSE relative to the reference's spread."""
    ref = np.asarray(reference, np.float64)
    err = np.asarray(measured, np.float64) - ref
    power, noise = float(np.mean(ref**2)), float(np.mean(err**2))
    snr = float(10 * np.log10(power / noise)) if noise > 0 else float("inf")
    max_abs = float(np.max(np.abs(err))) if err.size else 0.0
    return float(np.sqrt(noise)), snr, max_abs, float(np.sqrt(noise) / (np.std(ref) + 1e-12))


def quantization_error(
    model: keras.Model | str | os.PathLike,
    representative_data: Any,
    *,
    quantize: str = "int8",
    data: Any = None,
    num_samples: int = 64,
    num_calibration_samples: int = DEFAULT_NUM_SAMPLES,
) -> QuantizationErrorReport:
    """Measures each op's output error after post-training quantization.

    Args:
        model: a Keras model or a ``.keras`` path.
        representative_data: calibration data (any form `to_litert` accepts).
        quantize: ``"int8"``, ``"int16x8"``, ``"dynamic"`` or ``"float16"``.
        data: inputs to measure on (default: the representative data).
        num_samples: how many inputs to measure on.
        num_calibration_samples: the calibration sample budget.

    Returns:
        A `QuantizationErrorReport`; ``report.worst(3)`` names the layers to try
        in ``to_litert(..., keep_float=[...])``.

    Example:
        >>> report = quantization_error(model, x_train[:200])  # doctest: +SKIP
        >>> print(report.format_table())                       # doctest: +SKIP
    """
    model = load_model(model)
    specs = input_specs(model)
    samples = calibration_samples(
        representative_data if data is None else data, specs, num_samples=num_samples
    )
    inputs = [np.concatenate([s[i] for s in samples]) for i in range(len(specs))]
    float_content = to_litert(model, verify=False)
    quant_content = to_litert(
        model,
        quantize=quantize,
        representative_data=representative_data,
        num_calibration_samples=num_calibration_samples,
        allow_float_fallback=quantize in ("int8", "int16x8"),  # analyse whatever converts
        verify=False,
    )
    f_runner, _, f_details, f_values = _run_all_tensors(float_content, inputs)
    f_by_name = {d["name"]: i for i, d in f_details.items() if i in f_values}
    q_runner, ops, q_details, q_values = _run_all_tensors(quant_content, inputs)
    producer = {t: op for op in ops for t in op["outputs"]}
    names, rows = layer_names(model), []
    # Output tensors carry no layer scope; name them after the model's output layers.
    output_layers = {
        f_details[d["index"]]["name"]: (t._keras_history.operation.name,)
        for d, t in zip(f_runner.output_details, model.outputs)
    }
    graph_inputs = {d["index"]: x for d, x in zip(q_runner.input_details, inputs)}
    snr_of: dict[int, float] = {}  # q tensor -> SNR it carries (inherited if not measured)
    for op in ops:
        in_snr = min((snr_of.get(i, np.inf) for i in op["inputs"] if i >= 0), default=np.inf)
        if op["op_name"] == "QUANTIZE" and op["inputs"][0] in graph_inputs:
            ref = graph_inputs[op["inputs"][0]]
            snr_of[op["outputs"][0]] = _errors(ref, q_values[op["outputs"][0]])[1]
            continue
        source = op
        if op["op_name"] == "DEQUANTIZE" and op["inputs"][0] in producer:
            source = producer[op["inputs"][0]]  # report the op whose output this is
        for t in op["outputs"]:
            snr_of[t] = in_snr
            name = q_details[t]["name"]
            f_index = f_by_name.get(name)
            if f_index is None or t not in q_values or f_details[f_index]["dtype"] != np.float32:
                continue
            if np.shape(f_values[f_index]) != np.shape(q_values[t]):
                continue
            rmse, snr, max_abs, rel = _errors(f_values[f_index], q_values[t])
            snr_of[t] = snr
            scope = q_details[source["outputs"][0]]["name"] if source is not op else name
            rows.append(LayerError(
                op_index=int(source["index"]),
                op=source["op_name"],
                tensor=name,
                layers=tuple(layers_of_tensor(scope, names, model.name)) or output_layers.get(name, ()),
                rmse=rmse,
                snr_db=snr,
                max_abs_error=max_abs,
                relative_rmse=rel,
                input_snr_db=float(in_snr if source is op else snr_of.get(source["inputs"][0], in_snr)),
            ))
    rows.sort(key=lambda r: r.op_index)
    return QuantizationErrorReport(quantize=quantize, num_samples=len(samples), layers=tuple(rows))
