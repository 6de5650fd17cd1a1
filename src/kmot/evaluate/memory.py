"""Peak memory of a model, measured in isolated processes.

A child process imports the runtime, loads the model, runs it a few times on
zeros and reports its peak resident set size (Linux: ``VmHWM``, the high-water
mark of its own address space; elsewhere ``ru_maxrss``); a second, idle
child imports the same runtime and does nothing else. Their difference is what
the model costs on top of the runtime: weights (file pages touched through the
runtime's mmap and any repacked copies), activation arenas and delegate state.

- LiteRT: ``ai_edge_litert.interpreter.Interpreter(model_path=...)``, the way a
  deployment loads a file; nothing from TensorFlow or Keras is imported.
- Keras: ``keras`` plus ``kmot.core`` (so kmot's layers load), then
  ``keras.saving.load_model`` and eager calls.
- SavedModel: ``tensorflow`` alone (its thread pools set to `threads` first),
  ``tf.saved_model.load`` and calls of the serving signature.
- ONNX: ``onnxruntime`` alone, an ``InferenceSession`` on the CPU provider with
  `threads` intra-op threads, and ``session.run``.

Figures are in MB (10^6 bytes), comparable with file sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kmot.errors import EvaluationError
from kmot.evaluate.schema import MemoryStats

__all__ = ["measure_peak_memory", "peak_rss_mb"]

_CHILD = r"""
import os, sys
sys.path.extend(p for p in sys.argv[6].split(os.pathsep) if p and p not in sys.path)
import json, resource
kind, path, threads, runs, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
import numpy as np
if kind == "tflite":
    from ai_edge_litert.interpreter import Interpreter
    if path:
        it = Interpreter(model_path=path, num_threads=threads)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        for _ in range(runs):
            it.invoke()
elif kind == "saved_model":
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if path:
        sigs = tf.saved_model.load(path).signatures
        fn = sigs["serving_default"] if "serving_default" in sigs else next(iter(sigs.values()))
        feeds = {k: tf.zeros([batch if d is None else d for d in s.shape.as_list()], s.dtype)
                 for k, s in fn.structured_input_signature[1].items()}
        for _ in range(runs):
            fn(**feeds)
elif kind == "onnx":
    import re
    import onnxruntime as ort
    if path:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        names = {"float": "float32", "double": "float64"}
        feeds = {}
        for i in s.get_inputs():
            t = re.fullmatch(r"tensor\((\w+)\)", i.type).group(1)
            shape = [d if isinstance(d, int) and d > 0 else batch for d in i.shape]
            feeds[i.name] = np.zeros(shape, names.get(t, t))
        for _ in range(runs):
            s.run(None, feeds)
else:
    import keras
    import kmot.core
    if path:
        model = keras.saving.load_model(path, compile=False)
        xs = [np.zeros([batch if d is None else d for d in t.shape], t.dtype)
              for t in model.inputs]
        for _ in range(runs):
            out = model(xs[0] if len(xs) == 1 else xs, training=False)
            keras.tree.map_structure(keras.ops.convert_to_numpy, out)
try:  # Linux: this process's own high-water mark (see _peak_note)
    with open("/proc/self/status") as f:
        kib = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    peak = kib * 1024
except (OSError, StopIteration):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = rss if sys.platform == "darwin" else rss * 1024  # macOS: bytes, else KiB
print(json.dumps({"bytes": peak}))
"""
# _peak_note: on Linux, ru_maxrss of a child is at least its parent's RSS at fork
# time (exec keeps the old address space's high-water mark in the process's
# signal struct), so a child of a large Python process would report the parent's
# size. VmHWM belongs to the address space exec created, so it is the child's own.


def _child_command(*args: str) -> list[str]:
    """``python -I -c CHILD ARGS PATH``: no working directory, PYTHON* variable or
    user site on the child's path, so a ``resource.py`` or ``numpy.py`` in the
    current folder never runs. The folders this process imports from (kmot from a
    PYTHONPATH, say) are passed as PATH and appended after the child's own, where
    they cannot shadow the standard library; the working directory is left out."""
    cwd = os.path.realpath(os.getcwd())
    inherited = [p for p in sys.path
                 if p and os.path.isabs(p) and os.path.realpath(p) != cwd]
    return [sys.executable, "-I", "-c", _CHILD, *args, os.pathsep.join(inherited)]


def peak_rss_mb(kind: str, path: str | os.PathLike | None, *, threads: int = 1,
                runs: int = 5, batch_size: int = 1, timeout: float = 600) -> float:
    """Peak RSS, in MB, of a fresh process that loads and runs one model.

    With ``path=None`` the process only imports the runtime (the idle figure).

    Raises:
        EvaluationError: the child process failed (its last error line is quoted).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = _child_command(kind, os.fspath(path) if path else "", str(threads), str(runs),
                          str(batch_size))
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise EvaluationError(
            f"Measuring peak memory of {path or 'the idle runtime'} took over {timeout:.0f} "
            "s. Expected a model that loads and runs in a few seconds. Received: a "
            "timeout. Skip the measurement with memory=False (--no-memory)."
        ) from err
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EvaluationError(
            f"A child process could not load and run {path or 'the idle runtime'} to "
            f"measure peak memory. Expected it to exit 0. Received: exit code "
            f"{done.returncode}, {reason}. If the model uses custom layers registered "
            "only in your process, skip the measurement with memory=False."
        )
    return json.loads(lines[-1])["bytes"] / 1e6


_SUFFIXES = {".tflite": "tflite", ".keras": "keras", ".onnx": "onnx"}


def _kind(path: Path) -> str:
    """The runtime a model needs: by suffix, or "saved_model" for a SavedModel folder."""
    if path.is_dir():
        from kmot.export.saved_model import check_saved_model

        check_saved_model(path, error=EvaluationError)
        return "saved_model"
    if path.suffix not in _SUFFIXES:
        raise EvaluationError(
            "Expected a .tflite, .keras or .onnx file, or a SavedModel folder, to measure. "
            f"Received: {path.name}"
        )
    return _SUFFIXES[path.suffix]


def measure_peak_memory(
    model: str | os.PathLike,
    *,
    threads: int = 1,
    runs: int = 5,
    batch_size: int = 1,
    idle_mb: float | None = None,
) -> MemoryStats:
    """Peak memory of a process that loads and runs `model`, net of an idle one.

    Args:
        model: a ``.tflite``, ``.keras`` or ``.onnx`` file, or a SavedModel folder.
        threads: interpreter threads (LiteRT, ONNX Runtime, TensorFlow).
        runs: invocations on zeros after loading.
        batch_size: batch of the zeros (Keras models with a free batch axis).
        idle_mb: a known idle figure for this runtime (skips the idle child).

    Returns:
        A `MemoryStats` with peak, idle and net MB.

    Raises:
        EvaluationError: not a model file or SavedModel folder, or a child process failed.

    Example:
        >>> measure_peak_memory("model.tflite").net_mb  # doctest: +SKIP
        3.9
    """
    kind = _kind(Path(model))
    if idle_mb is None:
        idle_mb = peak_rss_mb(kind, None, threads=threads)
    peak = peak_rss_mb(kind, model, threads=threads, runs=runs, batch_size=batch_size)
    # net from the rounded figures, so that peak == idle + net as reported
    peak_mb, idle_rounded = round(peak, 3), round(idle_mb, 3)
    return MemoryStats(peak_mb=peak_mb, idle_mb=idle_rounded,
                       net_mb=round(peak_mb - idle_rounded, 3))
