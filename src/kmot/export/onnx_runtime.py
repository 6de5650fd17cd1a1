"""Running an ONNX file: one ONNX Runtime `InferenceSession` on the CPU provider."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kmot.errors import ConversionError, ModelFileError
from kmot.export.onnx import require_onnx

__all__ = ["ONNXModel", "onnx_dtype"]

_NAMES = {"float": "float32", "double": "float64"}


def onnx_dtype(type_name: str) -> str:
    """ONNX Runtime's ``"tensor(float)"`` -> NumPy's ``"float32"``."""
    match = re.fullmatch(r"tensor\((\w+)\)", type_name)
    if match is None:
        raise ModelFileError(f"Expected tensor inputs and outputs. Received: type {type_name}")
    return _NAMES.get(match.group(1), match.group(1))


class ONNXModel:
    """An ``.onnx`` file in an ONNX Runtime session, ready to predict and be timed.

    Args:
        path: the ``.onnx`` file.
        num_threads: intra-op threads (None: ONNX Runtime's default, all cores);
            inter-op work runs on one thread, ops one after another.

    Raises:
        KmotError: onnxruntime is not installed (``pip install "kmot[onnx]"``).
        ModelFileError: the file is missing or not a model ONNX Runtime can load.

    Example:
        >>> runner = ONNXModel("model_int8.onnx", num_threads=1)  # doctest: +SKIP
        >>> [logits] = runner.predict([x_test])                  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None):
        require_onnx("onnxruntime", purpose="Running an .onnx file")
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"No such ONNX file. Expected an .onnx file. Received: "
                                 f"{self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            first = (str(err).splitlines() or [""])[0][:300]
            raise ModelFileError(
                f"{self.path.name} is not an ONNX model ONNX Runtime can load. Expected a "
                f"complete .onnx file (to_onnx, or another exporter). Received: "
                f"{type(err).__name__}: {first}. Export the model again, or copy the whole file."
            ) from err
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def input_shapes(self) -> list[tuple[int | None, ...]]:
        """Each input's shape; named or unknown dimensions are None."""
        return [tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)
                for i in self.inputs]

    @property
    def input_dtypes(self) -> list[str]:
        return [onnx_dtype(i.type) for i in self.inputs]

    @property
    def output_dtypes(self) -> list[str]:
        return [onnx_dtype(o.type) for o in self.outputs]

    def _feeds(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        if len(arrays) != len(self.inputs):
            raise ConversionError(
                f"The ONNX model has {len(self.inputs)} input(s) {self.input_names}. Expected "
                f"one array per input. Received: {len(arrays)} array(s)")
        return {name: np.ascontiguousarray(a, dtype=dtype)
                for name, dtype, a in zip(self.input_names, self.input_dtypes, arrays)}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feeds)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            raise ConversionError(
                f"ONNX Runtime failed to run {self.path.name}. Expected inputs "
                f"{list(zip(self.input_names, self.input_shapes))}. Received: "
                f"{type(err).__name__}: {str(err).splitlines()[0][:300]}") from err

    def predict(self, arrays: Sequence[np.ndarray], *, batch_size: int = 64) -> list[np.ndarray]:
        """Outputs (one array per model output) on `arrays`, run in batches.

        A file declaring a fixed batch size runs in chunks of that size.
        """
        fixed = self.input_shapes[0][0] if self.inputs and self.input_shapes[0] else None
        size = fixed or batch_size
        chunks: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for start in range(0, len(arrays[0]), size):
            for i, out in enumerate(self._run(self._feeds([a[start:start + size]
                                                           for a in arrays]))):
                chunks[i].append(out)
        return [np.concatenate(c, axis=0) for c in chunks]

    def time_invoke(self, arrays: Sequence[np.ndarray], *, runs: int = 100,
                    warmup: int = 10) -> np.ndarray:
        """Latencies of one run alone, in ms: inputs and outputs are bound once.

        An `IOBinding` holds the inputs (copied in once) and the output buffers,
        so `run_with_iobinding` is the invocation and nothing else.
        """
        feeds = self._feeds(arrays)  # kept alive: the binding reads these buffers
        self._run(feeds)  # a bad input fails here, in kmot's words
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for out in self.outputs:
            binding.bind_output(out.name, "cpu")
        for _ in range(warmup):
            self.session.run_with_iobinding(binding)
        times = np.empty(runs)
        for i in range(runs):
            start = time.perf_counter()
            self.session.run_with_iobinding(binding)
            times[i] = time.perf_counter() - start
        return times * 1e3
