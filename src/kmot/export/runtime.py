"""Running LiteRT models: one small class over `ai_edge_litert`'s interpreter.

It hides what every caller would otherwise repeat: resizing for a batch,
quantizing inputs and dequantizing outputs of integer-I/O models, and timing
`invoke` alone.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kmot.errors import ConversionError

__all__ = ["LiteRTModel"]

#: Builtin ops whose state lives in variable tensors that persist between invocations.
STATEFUL_OPS = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM",
                          "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF"})


def _natural(details: dict[str, Any]) -> list[tuple[str, Any]]:
    """Signature entries in natural name order: output_2 before output_10."""
    return sorted(details.items(), key=lambda kv: [
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", kv[0])
    ])


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zero_point = detail["quantization"]
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float64) / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (y.astype(np.float32) - zero_point) * np.float32(scale)
    return y


class LiteRTModel:
    """A LiteRT model loaded in the interpreter, ready to predict and be timed.

    Args:
        model: a ``.tflite`` path or the flatbuffer bytes.
        num_threads: interpreter threads (None: the runtime's default).
        preserve_all_tensors: keep every intermediate tensor readable (for
            numerics; implies ``kernels="builtin"``, since a delegate fuses tensors away).
        kernels: which of LiteRT's kernel sets runs the ops: ``"default"`` (XNNPACK
            where it applies, as deployed on CPU), ``"builtin"`` (LiteRT's own
            optimized kernels, no delegate) or ``"reference"`` (its reference kernels,
            the arithmetic microcontroller runtimes follow). Their int8 rounding differs.

    Example:
        >>> runner = LiteRTModel("model.tflite")  # doctest: +SKIP
        >>> probs = runner.predict(x_test)        # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        *,
        num_threads: int | None = None,
        preserve_all_tensors: bool = False,
        kernels: str = "default",
    ):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolvers = {"default": OpResolverType.AUTO,
                     "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                     "reference": OpResolverType.BUILTIN_REF}
        if kernels not in resolvers:
            raise ConversionError(
                f"Unknown LiteRT kernel set {kernels!r}. Expected one of {sorted(resolvers)}. "
                f"Received: kernels={kernels!r}"
            )
        if preserve_all_tensors and kernels == "default":
            kernels = "builtin"  # for numerics: no delegate may fuse tensors away
        content = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
        self.content = bytes(content)
        kwargs: dict[str, Any] = {"experimental_op_resolver_type": resolvers[kernels]}
        if preserve_all_tensors:
            kwargs["experimental_preserve_all_tensors"] = True
        try:
            self.interpreter = Interpreter(
                model_content=self.content, num_threads=num_threads, **kwargs
            )
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ConversionError(
                "The LiteRT interpreter could not load the model. Expected a valid "
                f".tflite flatbuffer with ops this runtime supports. Received: {err}"
            ) from err
        self._batch: int | None = None
        self._read_details()
        ops = {op["op_name"] for op in self.interpreter._get_ops_details()}
        #: ops holding state in variable tensors between invocations (a fused LSTM):
        #: reset before each run, so every batch starts from the model's initial state
        self.stateful = bool(ops & STATEFUL_OPS)
        #: the one batch size such a file runs at (its state tensors have that batch)
        self.fixed_batch = self._fixed_batch() if self.stateful else None

    def _read_details(self) -> None:
        """Input/output details in signature order (the model's own order).

        A file's tensor order may differ from the order of its signature, which
        `to_litert` makes equal to the Keras model's input order.
        """
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        signatures = self.interpreter.get_signature_list()
        if len(signatures) == 1:
            key = next(iter(signatures))
            runner = self.interpreter.get_signature_runner(key)
            in_order = [d["index"] for _, d in _natural(runner.get_input_details())]
            out_order = [d["index"] for _, d in _natural(runner.get_output_details())]
            if sorted(in_order) == sorted(d["index"] for d in inputs):
                inputs = sorted(inputs, key=lambda d: in_order.index(d["index"]))
            if sorted(out_order) == sorted(d["index"] for d in outputs):
                outputs = sorted(outputs, key=lambda d: out_order.index(d["index"]))
        self.input_details = inputs
        self.output_details = outputs

    def _fixed_batch(self) -> int | None:
        batches = {int(d["shape_signature"][0]) if len(d["shape_signature"]) else
                   int(d["shape"][0]) for d in self.input_details}
        return batches.pop() if len(batches) == 1 and min(batches) >= 1 else None

    def _invoke(self) -> None:
        if self.stateful:
            self.interpreter.reset_all_variables()
        self.interpreter.invoke()

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        if self.fixed_batch is not None and batch != self.fixed_batch:
            raise ConversionError(
                f"This LiteRT file runs at batch size {self.fixed_batch} only (its "
                "stateful ops, such as a fused LSTM, hold state of that batch). Expected "
                f"inputs of batch {self.fixed_batch}; predict() splits any number of "
                f"samples. Received: batch {batch}")
        for d in self.input_details:
            shape = list(d["shape_signature"]) if len(d["shape_signature"]) else list(d["shape"])
            shape[0] = batch
            shape = [d["shape"][i] if s < 0 else s for i, s in enumerate(shape)]
            self.interpreter.resize_tensor_input(d["index"], shape, strict=False)
        self.interpreter.allocate_tensors()
        self._read_details()
        self._batch = batch

    def run_keeping_tensors(self, inputs: Any) -> dict[int, np.ndarray]:
        """Runs once on a whole batch; returns every tensor's (dequantized) value.

        Needs ``preserve_all_tensors=True``. Keys are tensor indices.
        """
        arrays = self._as_list(inputs)
        self._resize(arrays[0].shape[0])
        self._set_inputs(arrays)
        self._invoke()
        values = {}
        for d in self.interpreter.get_tensor_details():
            try:
                values[d["index"]] = _dequantize(self.interpreter.get_tensor(d["index"]), d)
            except ValueError:  # tensors with no data (e.g. optional inputs)
                continue
        return values

    def _set_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        for d, x in zip(self.input_details, inputs):
            self.interpreter.set_tensor(d["index"], _quantize(np.asarray(x), d))

    def _as_list(self, inputs: Any) -> list[np.ndarray]:
        arrays = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        if len(arrays) != len(self.input_details):
            raise ConversionError(
                f"The model has {len(self.input_details)} input(s). Expected one "
                f"array per input. Received: {len(arrays)} array(s)"
            )
        return [np.asarray(a) for a in arrays]

    def predict(self, inputs: Any, *, batch_size: int = 1) -> np.ndarray | list[np.ndarray]:
        """Runs the model on `inputs` (an array, or a list of arrays per input).

        Integer inputs and outputs are (de)quantized with the file's parameters,
        so callers always pass and receive float values.

        Returns:
            One float array (single output) or a list of arrays (one per output).
        """
        arrays = self._as_list(inputs)
        n = arrays[0].shape[0]
        batch_size = self.fixed_batch or batch_size
        chunks: list[list[np.ndarray]] = [[] for _ in self.output_details]
        for start in range(0, n, batch_size):
            part = [a[start : start + batch_size] for a in arrays]
            short = batch_size - part[0].shape[0] if self.fixed_batch else 0
            if short:  # the last chunk of a fixed-batch file: padded, the padding cut
                part = [np.concatenate([a, np.repeat(a[-1:], short, axis=0)]) for a in part]
            self._resize(part[0].shape[0])
            self._set_inputs(part)
            self._invoke()
            for i, d in enumerate(self.output_details):
                value = _dequantize(self.interpreter.get_tensor(d["index"]), d)
                chunks[i].append(value[:len(value) - short])
        outs = [np.concatenate(c, axis=0) for c in chunks]
        return outs[0] if len(outs) == 1 else outs

    def time_invoke(self, inputs: Any, *, runs: int = 100, warmup: int = 10) -> np.ndarray:
        """Latencies of `invoke` alone, in milliseconds, after `warmup` runs.

        Inputs are set once; only the invocation is timed.
        """
        arrays = self._as_list(inputs)
        self._resize(arrays[0].shape[0])
        self._set_inputs(arrays)
        for _ in range(warmup):
            self.interpreter.invoke()
        times = np.empty(runs)
        for i in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times[i] = time.perf_counter() - start
        return times * 1e3
