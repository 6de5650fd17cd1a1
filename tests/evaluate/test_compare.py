"""`compare` on real LiteRT files and Keras models of a trained digits CNN."""

import numpy as np
import pytest

from kmot.errors import EvaluationError
from kmot.evaluate import compare
from kmot.export import LiteRTModel, to_litert


def test_baseline_comes_first_with_no_fidelity(report):
    assert report.names == ["float", "int8"] and report.baseline == "float"
    base = report.candidate("float")
    assert base.fidelity is None and base.latency_ratio == 1.0
    assert base.metric_deltas == {"accuracy": 0.0, "top3": 0.0}


def test_int8_io_is_quantized_and_dequantized_automatically(report, files, val):
    x, y = val
    int8 = report.candidate("int8")
    assert int8.input_dtypes == ["int8"] and int8.output_dtypes == ["int8"]
    logits = LiteRTModel(files / "int8.tflite").predict(x)
    assert int8.metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == y))
    assert int8.metrics["accuracy"] > 0.85  # the model learned; dequantized logits are sane
    assert int8.fidelity.argmax_agreement > 0.95 and int8.fidelity.kl_divergence < 0.05
    float_acc = report.candidate("float").metrics["accuracy"]
    assert int8.metric_deltas["accuracy"] == pytest.approx(int8.metrics["accuracy"] - float_acc)


def test_latency_statistics(report):
    lat = report.candidate("int8").latency
    assert len(lat.samples_ms) == report.settings.runs == 30
    assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms
    assert lat.mean_ms == pytest.approx(np.mean(lat.samples_ms), rel=1e-3)
    ratio = lat.p50_ms / report.candidate("float").latency.p50_ms
    assert report.candidate("int8").latency_ratio == pytest.approx(ratio)


def test_size_and_op_coverage(report, files):
    int8, flt = report.candidate("int8"), report.candidate("float")
    assert int8.size.bytes == (files / "int8.tflite").stat().st_size
    assert 0 < int8.size.gzip_bytes < int8.size.bytes
    assert int8.ops.is_quantized and int8.ops.float == 0 and int8.ops.fallback == 0
    assert int8.ops.int8 >= 3  # conv, two dense
    assert not flt.ops.is_quantized and flt.ops.float >= 3 and flt.ops.int8 == 0
    assert int8.memory is None and report.settings.memory is False


def test_keras_models_in_memory_and_on_disk(files, val, trained_conv_bn_dense):
    report = compare({"keras": trained_conv_bn_dense, "file": files / "model.keras",
                      "lite": files / "float.tflite"}, val, runs=5, warmup=1, memory=False)
    keras_result = report.candidate("keras")
    assert keras_result.kind == "keras" and keras_result.ops is None
    assert keras_result.size.bytes > 0 and report.candidate("file").size.bytes > 0
    assert report.candidate("file").fidelity.output_rmse < 1e-5
    assert report.candidate("lite").fidelity.output_rmse < 1e-4


def test_candidates_by_list_bytes_and_default_baseline(files, val):
    content = (files / "int8.tflite").read_bytes()
    report = compare([files / "float.tflite", content], val, runs=3, warmup=0, memory=False)
    assert report.names == ["float", "candidate_1"] and report.baseline == "float"
    assert report.candidate("candidate_1").source is None


def test_user_metric_and_no_labels(files, val):
    def mean_top_logit(y_true, y_pred):
        return float(y_pred.max(-1).mean())

    report = compare([files / "float.tflite"], val, metrics=[mean_top_logit], runs=3, warmup=0,
                     memory=False)
    assert list(report.candidates[0].metrics) == ["mean_top_logit"]
    unlabeled = compare([files / "float.tflite"], (val[0], None), runs=3, warmup=0, memory=False)
    assert unlabeled.metrics == [] and unlabeled.primary_metric is None


def test_batch_size_sets_the_timed_batch(files, val):
    report = compare([files / "float.tflite"], val, batch_size=8, runs=3, warmup=0, memory=False)
    assert report.settings.batch_size == 8
    with pytest.raises(EvaluationError, match=r"Expected at least 500 samples. Received: 120"):
        compare([files / "float.tflite"], val, batch_size=500, memory=False)


def test_unknown_baseline(files, val):
    with pytest.raises(EvaluationError, match=r"Expected baseline to name a candidate: \['float'"
                       r"\]. Received: baseline='fp32'"):
        compare([files / "float.tflite"], val, baseline="fp32")


def test_duplicate_names(files, val, tmp_path):
    (tmp_path / "float.tflite").write_bytes((files / "float.tflite").read_bytes())
    with pytest.raises(EvaluationError, match=r"Expected distinct candidate names. Received: "
                       r"\['float'\] more than once"):
        compare([files / "float.tflite", tmp_path / "float.tflite"], val)


def test_no_candidates(val):
    with pytest.raises(EvaluationError, match=r"Expected at least one candidate"):
        compare({}, val)


@pytest.mark.parametrize("option", ["runs", "threads", "batch_size", "predict_batch_size"])
def test_bad_options(files, val, option):
    with pytest.raises(EvaluationError, match=rf"Expected {option} to be an int >= 1. "
                       rf"Received: {option}=0"):
        compare([files / "float.tflite"], val, **{option: 0})


def test_bad_candidates(files, val, tmp_path):
    with pytest.raises(EvaluationError, match=r"No such model file for candidate 'nope'"):
        compare([tmp_path / "nope.tflite"], val)
    with pytest.raises(EvaluationError, match=r"Candidate 'val': expected a .tflite, .keras or "
                       r".onnx file, or a SavedModel folder. Received: val.npz"):
        compare([files / "val.npz"], val)
    with pytest.raises(EvaluationError, match=r"is bytes but not a LiteRT flatbuffer"):
        compare({"junk": b"0123456789"}, val)
    with pytest.raises(EvaluationError, match=r"Candidate 'n': expected a keras.Model.*Received: "
                       r"int"):
        compare({"n": 3}, val)
    broken = bytearray((files / "float.tflite").read_bytes())[:200]
    with pytest.raises(EvaluationError, match=r"Candidate 'cut' could not be loaded"):
        compare({"cut": bytes(broken)}, val)


def test_subclassed_keras_model_without_inputs(val):
    import keras

    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(EvaluationError, match=r"Candidate 'net' is a Keras model without "
                       r"defined inputs"):
        compare({"net": Net()}, val)


def test_outputs_of_another_shape_cannot_be_compared(files, val, tmp_path):
    import keras

    other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(4)])
    to_litert(other, tmp_path / "four.tflite")
    with pytest.raises(EvaluationError, match=r"Candidate 'four' must have the baseline's output "
                       r"shape"):
        compare([files / "float.tflite", tmp_path / "four.tflite"], val, metrics=[], runs=2,
                memory=False)


def test_threads_progress_and_odd_names(files, val, trained_conv_bn_dense, capsys):
    report = compare({"a/b float": files / "float.tflite", "keras: model": trained_conv_bn_dense},
                     val, threads=2, runs=3, warmup=0, memory=False, progress=True)
    assert report.settings.threads == 2 and report.names == ["a/b float", "keras: model"]
    assert report.candidate("keras: model").size.bytes > 0  # saved under a safe file name
