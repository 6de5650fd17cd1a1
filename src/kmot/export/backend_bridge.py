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

The child is started once and kept for the caller's next conversions (a sweep
of exports pays TensorFlow's start-up once): it reads one request folder per
line on stdin and answers on a pipe of its own, so what TensorFlow prints cannot
be taken for an answer. It ends when the caller does (its stdin closes). A child
that died is started again on the next conversion; one interrupted in the middle
of a request is stopped, so no late answer is read as the next one's.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from kmot import errors
from kmot._tempdirs import temporary_directory
from kmot.errors import ConversionError, KmotError

__all__ = ["needs_tensorflow_process", "to_litert_in_tensorflow", "worker_pid"]

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
        answered, tail = _WORKER.request(folder)
        if (folder / _ERROR).exists():
            failure = json.loads((folder / _ERROR).read_text())
            kind = getattr(errors, failure["type"], None)
            if not (isinstance(kind, type) and issubclass(kind, KmotError)):
                kind = KmotError
            raise kind(failure["message"])
        if not answered or not (folder / _RESULT).exists():
            raise ConversionError(
                "The TensorFlow process that converts models from the "
                f"{_backend()} backend failed. Expected it to write the LiteRT file. "
                f"Received: {answered or 'no answer (it ended)'}\n{tail}")
        content = (folder / _RESULT).read_bytes()
    if path is not None:
        write_atomic(path, content)
    return content


class _Worker:
    """The TensorFlow child kept between conversions (see module doc)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._answers = None
        self._log = None

    def _start(self) -> None:
        self._log = tempfile.TemporaryFile("w+", prefix="kmot-export-bridge-")
        read, write = os.pipe()
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--serve", str(write)], env=env,
            stdin=subprocess.PIPE, stdout=self._log, stderr=self._log, text=True,
            pass_fds=(write,))
        os.close(write)
        self._answers = os.fdopen(read, "r")

    def request(self, folder: Path) -> tuple[str, str]:
        """Sends one request; (its answer or "" when the child ended, the child's last
        output lines)."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self.stop()
                self._start()
            self._log.seek(0)
            self._log.truncate()
            try:
                self._process.stdin.write(f"{folder}\n")
                self._process.stdin.flush()
                answer = self._answers.readline().strip()
            except BrokenPipeError:
                answer = ""
            except BaseException:  # interrupted: a late answer must not pass for the next
                self.stop()
                raise
            tail = ""
            if answer != "done":
                self._log.seek(0)
                tail = "\n".join(self._log.read().strip().splitlines()[-12:])
                code = self._process.poll()
                answer = f"exit code {code}" if code is not None else answer
                self.stop()
            return answer, tail

    def pid(self) -> int | None:
        running = self._process is not None and self._process.poll() is None
        return self._process.pid if running else None

    def stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            for stream in (self._process.stdin, self._answers, self._log):
                try:
                    stream.close()
                except OSError:
                    pass
        self._process = self._answers = self._log = None


_WORKER = _Worker()
atexit.register(_WORKER.stop)


def worker_pid() -> int | None:
    """The process id of the TensorFlow child converting for this process, if running."""
    return _WORKER.pid()


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


def _serve(answers_fd: int) -> None:
    """The child's loop: a request folder per line on stdin, "done" on its own pipe.
    An unexpected error is written as the request's ConversionError; the child goes on."""
    import gc

    import keras

    answers = os.fdopen(answers_fd, "w")
    for line in sys.stdin:
        folder = Path(line.strip())
        try:
            _child(folder)
        except Exception as err:  # anything the conversion raises: reported, not fatal
            (folder / _ERROR).write_text(json.dumps({
                "type": "ConversionError",
                "message": "The TensorFlow process failed to convert the model. Received: "
                           f"{type(err).__name__}: {str(err)[:2000]}"}))
        finally:
            keras.backend.clear_session()
            gc.collect()
        answers.write("done\n")
        answers.flush()


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        _serve(int(sys.argv[2]))
    else:
        _child(Path(sys.argv[1]))
