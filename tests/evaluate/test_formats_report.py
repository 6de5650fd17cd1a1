"""One report, every format: the digits CNN as int8 LiteRT, SavedModel, float and int8 ONNX."""

import json

import keras
import pytest

from kmot.data import digits_cnn
from kmot.errors import EvaluationError
from kmot.evaluate import Report, compare, measure_peak_memory
from kmot.export import to_litert, to_onnx, to_saved_model

FORMATS = {"tflite_int8": "tflite", "saved_model": "saved_model", "onnx_float": "onnx",
           "onnx_int8": "onnx"}


@pytest.fixture(scope="module")
def report(tmp_path_factory, digits_data):
    x_train, y_train, x_test, y_test = digits_data
    folder = tmp_path_factory.mktemp("formats")
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    calib = x_train[:200]
    to_litert(model, folder / "digits_int8.tflite", quantize="int8", representative_data=calib)
    to_saved_model(model, folder / "digits_saved_model")
    to_onnx(model, folder / "digits.onnx")
    to_onnx(model, folder / "digits_int8.onnx", quantize="int8", representative_data=calib)
    candidates = {"keras": model, "tflite_int8": folder / "digits_int8.tflite",
                  "saved_model": folder / "digits_saved_model",
                  "onnx_float": folder / "digits.onnx", "onnx_int8": folder / "digits_int8.onnx"}
    result = compare(candidates, (x_test, y_test), baseline="keras", runs=50, warmup=5,
                     threads=1, progress=False)
    saved = result.save(folder / "report")
    return result, saved


@pytest.mark.slow
def test_every_format_is_measured_by_the_same_protocol(report):
    result, _ = report
    keras_accuracy = result.candidate("keras").metrics["accuracy"]
    assert keras_accuracy > 0.9
    for name, kind in FORMATS.items():
        c = result.candidate(name)
        assert c.kind == kind
        assert abs(c.metrics["accuracy"] - keras_accuracy) < 0.03, name
        assert c.fidelity.argmax_agreement > 0.95, name
        assert 0 < c.latency.p50_ms <= c.latency.p90_ms <= c.latency.p99_ms, name
        assert len(c.latency.samples_ms) == 50
        assert c.memory is not None, (name, c.notes)
        assert c.memory.idle_mb > 1 and c.memory.peak_mb == pytest.approx(
            c.memory.idle_mb + c.memory.net_mb, abs=1e-3)
        assert 0 < c.size.gzip_bytes <= c.size.bytes * 1.01, name


@pytest.mark.slow
def test_sizes_and_ops_follow_each_format(report):
    result, _ = report
    c = {n: result.candidate(n) for n in FORMATS}
    weights = 84_010 * 4  # the CNN's float32 parameters
    assert c["onnx_float"].size.bytes > weights
    assert c["saved_model"].size.bytes > weights
    assert c["onnx_int8"].size.bytes < c["onnx_float"].size.bytes / 3
    assert c["tflite_int8"].size.bytes < c["onnx_float"].size.bytes / 3
    assert c["saved_model"].ops is None  # TensorFlow runs the float graph as written
    for name in ("tflite_int8", "onnx_int8"):
        ops = c[name].ops
        assert ops.is_quantized and ops.fallback == 0 and ops.float == 0, (name, ops)
    assert not c["onnx_float"].ops.is_quantized and c["onnx_float"].ops.int8 == 0
    # The runtimes differ: a SavedModel loads all of TensorFlow, LiteRT a small interpreter.
    assert c["saved_model"].memory.idle_mb > c["tflite_int8"].memory.idle_mb


@pytest.mark.slow
def test_the_report_shows_every_format_in_json_markdown_and_html(report):
    result, saved = report
    data = json.loads(saved["json"].read_text())
    kinds = {c["name"]: c["kind"] for c in data["candidates"]}
    assert kinds == {"keras": "keras", **FORMATS}
    for c in data["candidates"]:
        assert {"p50_ms", "p90_ms", "p99_ms"} <= set(c["latency"])
        assert c["memory"]["peak_mb"] > 0 and c["size"]["gzip_bytes"] > 0
    assert Report.load(saved["json"]).candidate("saved_model").size == \
        result.candidate("saved_model").size
    markdown = saved["markdown"].read_text()
    html = saved["html"].read_text()
    for name, kind in FORMATS.items():
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {kind} |" in row
        assert name in html
    assert "saved_model" in html and "<svg" in html


@pytest.mark.slow
def test_peak_memory_of_each_new_kind(report, tmp_path):
    result, _ = report
    onnx = result.candidate("onnx_int8")
    stats = measure_peak_memory(onnx.source, idle_mb=onnx.memory.idle_mb)
    assert stats.idle_mb == onnx.memory.idle_mb and stats.peak_mb > 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match=r"empty is not a SavedModel: it holds no "
                       r"saved_model.pb"):
        measure_peak_memory(tmp_path / "empty")
