"""Peak memory, measured for real in child processes (slow: a few seconds each)."""

import keras
import numpy as np
import pytest

from kmot.errors import EvaluationError
from kmot.evaluate import compare, gate, measure_peak_memory
from kmot.export import inspect, to_litert


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A 2M-parameter model as float (8 MB of weights) and int8 (2 MB) files."""
    folder = tmp_path_factory.mktemp("memory")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(2000, activation="relu"),
                              keras.layers.Dense(10)])
    calib = np.random.default_rng(0).random((32, 1000)).astype("float32")
    to_litert(model, folder / "wide_float.tflite")
    to_litert(model, folder / "wide_int8.tflite", quantize="int8", representative_data=calib)
    return folder, calib


@pytest.mark.slow
def test_peak_memory_follows_the_weights(wide):
    folder, calib = wide
    report = compare([folder / "wide_float.tflite", folder / "wide_int8.tflite"],
                     (calib, None), runs=5, warmup=1)
    flt = report.candidate("wide_float").memory
    int8 = report.candidate("wide_int8").memory
    assert flt.idle_mb == int8.idle_mb > 10  # the same idle runtime, measured once
    assert flt.peak_mb == pytest.approx(flt.idle_mb + flt.net_mb, abs=1e-3)
    weights = {name: sum(w.size * np.dtype(w.dtype).itemsize
                         for w in inspect(folder / f"{name}.tflite").weights)
               for name in ("wide_float", "wide_int8")}
    difference = (weights["wide_float"] - weights["wide_int8"]) / 1e6  # about 6 MB
    assert int8.net_mb > 0
    # The float model costs at least its extra weights more; copies (mmap plus a
    # repacked one) may make it up to about twice that.
    assert difference * 0.8 < flt.net_mb - int8.net_mb < difference * 3


@pytest.mark.slow
def test_a_keras_model_is_measured_too(files):
    stats = measure_peak_memory(files / "model.keras")
    assert stats.idle_mb > 100 and stats.net_mb >= 0  # Keras and TensorFlow are large


def test_only_model_files_are_measured(files):
    with pytest.raises(EvaluationError, match=r"Expected a .tflite, .keras or .onnx file, or a "
                       r"SavedModel folder, to measure. Received: val.npz"):
        measure_peak_memory(files / "val.npz")


@pytest.mark.slow
def test_a_child_that_cannot_load_the_model_is_reported(tmp_path):
    (tmp_path / "junk.tflite").write_bytes(b"1234TFL3" + b"\0" * 64)
    with pytest.raises(EvaluationError, match=r"A child process could not load and run .*junk"
                       r".tflite to measure peak memory.*Received: exit code 1"):
        measure_peak_memory(tmp_path / "junk.tflite", idle_mb=0.0)


class Doubling(keras.layers.Layer):  # not registered: a fresh process cannot load it
    def call(self, x):
        return x * 2


@pytest.mark.slow
def test_compare_keeps_going_and_notes_a_failed_memory_measurement(val):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), Doubling(),
                              keras.layers.Dense(10)])
    report = compare({"custom": model}, val, runs=2, warmup=0)
    result = report.candidate("custom")
    assert result.memory is None
    assert result.notes and result.notes[0].startswith("peak memory not measured: A child "
                                                       "process could not load")
    [check] = gate(report, {"max_peak_memory_mb": 100}).checks
    assert not check.passed and check.detail.startswith(
        "net peak memory: peak memory not measured: A child process could not load")


def test_a_child_that_takes_too_long_is_stopped(files):
    from kmot.evaluate.memory import peak_rss_mb

    with pytest.raises(EvaluationError, match=r"took over 0 s.*Received: a timeout. Skip the "
                       r"measurement with memory=False"):
        peak_rss_mb("tflite", files / "int8.tflite", timeout=0.01)
