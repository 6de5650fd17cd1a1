"""Candidates as runners: one small class per model kind.

Kinds: a LiteRT file, a Keras model, a TensorFlow SavedModel folder, an ONNX
file. A runner knows its inputs, predicts, times single invocations, and
reports the artifact's size and op coverage; `compare` does the rest the same
way for all.

How each kind is timed (`time.perf_counter` around one invocation):

- LiteRT: a fresh interpreter with `threads` threads; inputs are set once, then
  `invoke()` alone is timed (`LiteRTModel.time_invoke`).
- ONNX: an ONNX Runtime session on the CPU provider with `threads` intra-op
  threads; inputs and outputs are bound once (`IOBinding`), then
  `run_with_iobinding` alone is timed.
- SavedModel: `tf.saved_model.load` and its serving signature, called on
  tensors made once; TensorFlow's thread pools are the process's (a note says
  so when they differ from `threads`).
- Keras: an eager call ``model(x, training=False)`` plus the copy of its output
  to NumPy, so framework dispatch is included; it is not an on-device figure.

Sizes are the file's bytes and its gzip -9 size; a SavedModel folder's are the
sum of its files and the gzip -9 size of a tar of them (sorted, no timestamps).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from kmot.errors import EvaluationError, KmotError
from kmot.evaluate.data import InputSpec
from kmot.evaluate.schema import OpCoverage, SizeStats

__all__ = ["KerasRunner", "LiteRTRunner", "ONNXRunner", "SavedModelRunner", "make_runner",
           "candidate_name", "folder_size"]


def _gzip_size(content: bytes) -> int:
    return len(gzip.compress(content, compresslevel=9, mtime=0))


class _Counter(io.RawIOBase):
    """A sink that keeps only the number of bytes written to it."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.count += len(data)
        return len(data)


def folder_size(folder: str | os.PathLike) -> SizeStats:
    """A folder's files: their total bytes, and the gzip -9 size of a tar of them.

    The tar is streamed (never held in memory) with entries sorted by path and
    no timestamps, owners or modes, so the figure depends on the content alone.
    """
    root = Path(folder)
    files = sorted((p for p in root.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda p: p.relative_to(root).as_posix())
    sink = _Counter()
    with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size, info.mode = path.stat().st_size, 0o644
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return SizeStats(bytes=sum(p.stat().st_size for p in files), gzip_bytes=sink.count)


def _file_name(name: str, suffix: str) -> str:
    """A safe, collision-free file name for a candidate name (which may hold '/')."""
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:60]}-{digest}{suffix}"


def _natural_key(name: str) -> list[tuple[int, int, str]]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


def _specs(names: list[str], shapes: list[tuple[int | None, ...]],
           dtypes: list[str]) -> list[InputSpec]:
    return [InputSpec(name=n, shape=(None, *shape[1:]), dtype=d)
            for n, shape, d in zip(names, shapes, dtypes)]


class _Runner:
    """What every runner shares: ``specs`` (the inputs it expects) give their dtypes."""

    specs: list

    @property
    def input_dtypes(self) -> list[str]:
        return [s.dtype for s in self.specs]


class _FileRunner(_Runner):
    """A runner over a runtime's model object (``self.model``) loaded from ``self.source``."""

    def predict(self, arrays: list[np.ndarray], *, batch_size: int) -> list[np.ndarray]:
        return self.model.predict(arrays, batch_size=batch_size)

    def artifact(self, folder: str) -> str:
        return self.source


class LiteRTRunner(_Runner):
    """A `.tflite` candidate, run with `kmot.export.LiteRTModel`."""

    kind = "tflite"

    def __init__(self, name: str, content: bytes, *, source: str | None, threads: int):
        from kmot.export import LiteRTModel

        self.name, self.content, self.source, self.threads = name, content, source, threads
        self.model = LiteRTModel(content, num_threads=threads)
        details = self.model.input_details
        names = [d["name"] for d in details]
        signatures = self.model.interpreter.get_signature_list()
        if len(signatures) == 1:  # the Keras input names, in the order LiteRTModel uses
            declared = sorted(next(iter(signatures.values()))["inputs"], key=_natural_key)
            if len(declared) == len(details):
                names = declared
        self.specs = [
            InputSpec(
                name=n,
                shape=(None, *(None if s < 0 else int(s) for s in _signature(d)[1:])),
                dtype=np.dtype(d["dtype"]).name,
                quantized=np.dtype(d["dtype"]).kind in "iu" and bool(d["quantization"][0]),
            )
            for n, d in zip(names, details)
        ]
        self.output_dtypes = [np.dtype(d["dtype"]).name for d in self.model.output_details]
        self._static_batch = any(_signature(d)[0] > 0 for d in details if len(_signature(d)))

    def predict(self, arrays: list[np.ndarray], *, batch_size: int) -> list[np.ndarray]:
        # A file declaring a fixed batch runs in chunks of that batch (no resize).
        size = int(self.model.input_details[0]["shape"][0]) if self._static_batch else batch_size
        outputs = self.model.predict(arrays, batch_size=max(size, 1))
        return outputs if isinstance(outputs, list) else [outputs]

    def time(self, arrays: list[np.ndarray], *, runs: int, warmup: int) -> np.ndarray:
        from kmot.export import LiteRTModel

        # A fresh interpreter: the timed one has never been resized for prediction.
        fresh = LiteRTModel(self.content, num_threads=self.threads)
        return fresh.time_invoke(arrays, runs=runs, warmup=warmup)

    def size(self, folder: str) -> SizeStats:
        return SizeStats(bytes=len(self.content), gzip_bytes=_gzip_size(self.content))

    def ops(self) -> OpCoverage:
        from kmot.export import inspect

        return _coverage(inspect(self.content))

    def artifact(self, folder: str) -> str:
        """A file holding the model, for a separate process to load."""
        if self.source:
            return self.source
        from kmot._files import write_atomic

        return str(write_atomic(Path(folder) / _file_name(self.name, ".tflite"), self.content))


def _signature(detail: dict[str, Any]) -> np.ndarray:
    sig = detail.get("shape_signature")
    return sig if sig is not None and len(sig) else detail["shape"]


class KerasRunner(_Runner):
    """A Keras model (in memory or a `.keras` file), run with Keras."""

    kind = "keras"

    def __init__(self, name: str, model: Any, *, source: str | None):
        from kmot.export import input_specs

        self.name, self.model, self.source = name, model, source
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):  # a subclassed model never called
            inputs = None
        if not inputs:
            raise EvaluationError(
                f"Candidate {name!r} is a Keras model without defined inputs. Expected "
                "a Functional or Sequential model, or a subclassed model called once "
                f"on data. Received: {type(model).__name__} {model.name!r}"
            )
        self.specs = [InputSpec(s.name, s.shape, s.dtype) for s in input_specs(model)]
        self.output_dtypes = [str(t.dtype) for t in model.outputs]
        self._saved: str | None = None

    def _x(self, arrays: list[np.ndarray]) -> Any:
        return arrays[0] if len(arrays) == 1 else list(arrays)

    def predict(self, arrays: list[np.ndarray], *, batch_size: int) -> list[np.ndarray]:
        outputs = self.model.predict(self._x(arrays), batch_size=batch_size, verbose=0)
        return [np.asarray(o) for o in outputs] if isinstance(outputs, (list, tuple)) else [
            np.asarray(outputs)]

    def time(self, arrays: list[np.ndarray], *, runs: int, warmup: int) -> np.ndarray:
        import time

        import keras

        x = self._x(arrays)

        def call() -> None:
            keras.tree.map_structure(keras.ops.convert_to_numpy, self.model(x, training=False))

        for _ in range(warmup):
            call()
        times = np.empty(runs)
        for i in range(runs):
            start = time.perf_counter()
            call()
            times[i] = time.perf_counter() - start
        return times * 1e3

    def artifact(self, folder: str) -> str:
        """The `.keras` file (saved to `folder` for an in-memory model)."""
        if self.source:
            return self.source
        if self._saved is None:
            from kmot._files import atomic_path

            path = Path(folder) / _file_name(self.name, ".keras")
            with atomic_path(path, suffix=".keras") as tmp:
                self.model.save(tmp)
            self._saved = str(path)
        return self._saved

    def size(self, folder: str) -> SizeStats:
        # .keras is a zip archive: gzip gains little; both are reported for symmetry.
        content = Path(self.artifact(folder)).read_bytes()
        return SizeStats(bytes=len(content), gzip_bytes=_gzip_size(content))

    def ops(self) -> None:
        return None


class SavedModelRunner(_FileRunner):
    """A SavedModel folder, run with TensorFlow (`tf.saved_model.load`, serving signature)."""

    kind = "saved_model"

    def __init__(self, name: str, path: Path, *, threads: int):
        from kmot.export.saved_model_runtime import TFSavedModel

        self.name, self.source = name, str(path)
        self.model = TFSavedModel(path)
        self.specs = _specs(self.model.input_names, self.model.input_shapes,
                            self.model.input_dtypes)
        self.output_dtypes = self.model.output_dtypes
        self.notes = _thread_notes(threads)

    def time(self, arrays: list[np.ndarray], *, runs: int, warmup: int) -> np.ndarray:
        return self.model.time_invoke(arrays, runs=runs, warmup=warmup)

    def size(self, folder: str) -> SizeStats:
        return folder_size(self.source)

    def ops(self) -> None:
        return None  # TensorFlow runs the graph as written: no integer kernels to count



def _thread_notes(threads: int) -> list[str]:
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
    if intra == threads:
        return []
    return [(f"latency: TensorFlow's thread pools belong to the process ({intra} intra-op "
             f"threads), not threads={threads}; peak memory ran with threads={threads}")]


class ONNXRunner(_FileRunner):
    """An ``.onnx`` file, run with ONNX Runtime (CPU provider)."""

    kind = "onnx"

    def __init__(self, name: str, path: Path, *, threads: int):
        from kmot.export.onnx_runtime import ONNXModel

        self.name, self.source, self.threads = name, str(path), threads
        self.model = ONNXModel(path, num_threads=threads)
        self.specs = _specs(self.model.input_names, self.model.input_shapes,
                            self.model.input_dtypes)
        self.output_dtypes = self.model.output_dtypes

    def time(self, arrays: list[np.ndarray], *, runs: int, warmup: int) -> np.ndarray:
        from kmot.export.onnx_runtime import ONNXModel

        # A fresh session, like LiteRT's fresh interpreter for timing.
        fresh = ONNXModel(self.source, num_threads=self.threads)
        return fresh.time_invoke(arrays, runs=runs, warmup=warmup)

    def size(self, folder: str) -> SizeStats:
        content = Path(self.source).read_bytes()
        return SizeStats(bytes=len(content), gzip_bytes=_gzip_size(content))

    def ops(self) -> OpCoverage:
        """The ops ONNX Runtime runs after fusing QDQ pairs (see `kmot.export.onnx_ops`)."""
        from kmot.export.onnx_ops import runtime_ops

        return _coverage(runtime_ops(self.source))


_KINDS = "a .tflite, .keras or .onnx file, or a SavedModel folder"


def _coverage(graph: Any) -> OpCoverage:
    """Op counts by computing type of a LiteRT or ONNX graph (``ops`` with ``kind``,
    ``is_quantized`` and ``float_ops_between_io()``)."""
    kinds = [op.kind for op in graph.ops]
    fallback = graph.float_ops_between_io() if graph.is_quantized else []
    return OpCoverage(
        total=len(kinds), int8=kinds.count("int8"), int16=kinds.count("int16"),
        float=kinds.count("float"), quantize=kinds.count("quantize") + kinds.count("dequantize"),
        other=kinds.count("other"), fallback=len(fallback),
        fallback_ops=[f"#{op.index} {op.name}" for op in fallback],
        is_quantized=graph.is_quantized,
    )


def candidate_name(model: Any, index: int) -> str:
    """The default name of a candidate given in a list: file stem or model name."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model).stem
    if isinstance(model, (bytes, bytearray)):
        return f"candidate_{index}"
    return str(getattr(model, "name", f"candidate_{index}"))


def make_runner(name: str, model: Any, *,
                threads: int) -> LiteRTRunner | KerasRunner | SavedModelRunner | ONNXRunner:
    """The runner for one candidate: bytes/.tflite -> LiteRT, Model/.keras -> Keras,
    a folder -> SavedModel (TensorFlow), .onnx -> ONNX Runtime.

    Raises:
        EvaluationError: unknown kind, missing file, or the model fails to load.
    """
    try:
        if isinstance(model, (bytes, bytearray)):
            if bytes(model[4:8]) != b"TFL3":
                raise EvaluationError(
                    f"Candidate {name!r} is bytes but not a LiteRT flatbuffer (no TFL3 "
                    f"identifier). Expected the bytes to_litert returns. Received: "
                    f"{len(model)} bytes starting with {bytes(model[:8])!r}"
                )
            return LiteRTRunner(name, bytes(model), source=None, threads=threads)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if path.is_dir():
                return SavedModelRunner(name, path, threads=threads)
            if not path.is_file():
                raise EvaluationError(
                    f"No such model file for candidate {name!r}. Expected {_KINDS}. "
                    f"Received: {path}"
                )
            if path.suffix == ".tflite":
                return LiteRTRunner(name, path.read_bytes(), source=str(path), threads=threads)
            if path.suffix == ".keras":
                from kmot.export import load_model

                return KerasRunner(name, load_model(path), source=str(path))
            if path.suffix == ".onnx":
                return ONNXRunner(name, path, threads=threads)
            raise EvaluationError(
                f"Candidate {name!r}: expected {_KINDS}. Received: {path.name}. Convert "
                "other formats first (kmot convert, to_litert, to_onnx, to_saved_model)."
            )
        import keras

        if isinstance(model, keras.Model):
            return KerasRunner(name, model, source=None)
    except EvaluationError:
        raise
    except KmotError as err:
        raise EvaluationError(f"Candidate {name!r} could not be loaded. {err}") from err
    raise EvaluationError(
        f"Candidate {name!r}: expected a keras.Model, a path ({_KINDS}), or "
        f"LiteRT flatbuffer bytes. Received: {type(model).__name__}"
    )
