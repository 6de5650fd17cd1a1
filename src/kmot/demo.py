"""The built-in demo: the digits baseline exported in every post-training mode.

Shared by `kmot demo` and `benchmarks/ptq.py`, so both report the same figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["train_digits_baseline", "ptq_rows", "PTQ_MODES"]

PTQ_MODES = ("float32", "float16", "dynamic", "int8")


def train_digits_baseline(*, epochs: int = 15, seed: int = 0, verbose: int = 0):
    """Trains the benchmark's digits CNN (Adam 1e-3, batch 64).

    Returns:
        ``(model, (x_train, y_train, x_test, y_test))``.
    """
    import keras

    from kmot.data import digits, digits_cnn

    keras.utils.set_random_seed(seed)
    data = digits(seed=seed)
    model = digits_cnn()
    model.fit(data[0], data[1], batch_size=64, epochs=epochs, verbose=verbose)
    return model, data


def ptq_rows(
    model: Any,
    x_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    modes: tuple[str, ...] = PTQ_MODES,
    out_dir: str | os.PathLike | None = None,
    latency_runs: int = 200,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Exports `model` in each mode and measures it in the LiteRT interpreter.

    Returns:
        One dict per mode: mode, accuracy, bytes, gzip_bytes, p50_ms (single
        image, one thread), and float_ops (float compute ops left in the file).
    """
    from kmot.export import LiteRTModel, inspect, to_litert

    rows = []
    for mode in modes:
        if progress:
            progress(mode)
        path = Path(out_dir) / f"digits_{mode}.tflite" if out_dir else None
        content = to_litert(
            model,
            path,
            quantize=None if mode == "float32" else mode,
            representative_data=x_train,
        )
        runner = LiteRTModel(content, num_threads=1)
        logits = runner.predict(x_test, batch_size=64)
        info = inspect(content)
        times = runner.time_invoke(x_test[:1], runs=latency_runs, warmup=20)
        rows.append(
            {
                "mode": mode,
                "accuracy": float(np.mean(np.argmax(logits, -1) == y_test)),
                "bytes": info.size_bytes,
                "gzip_bytes": info.gzip_bytes,
                "p50_ms": float(np.percentile(times, 50)),
                "float_ops": len(info.float_ops) if info.is_quantized else None,
            }
        )
    return rows
