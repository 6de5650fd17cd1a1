"""SavedModel and ONNX export of the digits CNN: outputs, stripping, atomic writes, errors."""

import sys

import keras
import numpy as np
import pytest

from kmot import quantization, sparsity
from kmot.data import digits_cnn
from kmot.errors import (
    CalibrationDataError,
    ConversionError,
    EvaluationError,
    KmotError,
    ModelFileError,
)
from kmot.evaluate import compare
from kmot.evaluate.runners import folder_size
from kmot.export import to_litert, to_onnx, to_saved_model
from kmot.export.onnx import require_onnx
from kmot.export.onnx_ops import runtime_ops
from kmot.export.onnx_runtime import ONNXModel
from kmot.export.saved_model_runtime import TFSavedModel

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def cnn(digits_data):
    """The digits CNN trained 2 epochs (~0.95 accuracy)."""
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.fit(digits_data[0], digits_data[1], epochs=2, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory, cnn, digits_data):
    folder = tmp_path_factory.mktemp("onnx")
    return {mode: to_onnx(cnn, folder / f"{mode}.onnx", quantize=mode,
                          representative_data=digits_data[0][:200])
            for mode in (None, "dynamic", "int8")}


def _accuracy(logits, y):
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_saved_model_computes_what_keras_does(cnn, digits_data, tmp_path):
    x = digits_data[2]
    path = to_saved_model(cnn, tmp_path / "digits")
    assert path == tmp_path / "digits" and (path / "saved_model.pb").is_file()
    runner = TFSavedModel(path)
    assert runner.input_names == ["image"] and runner.input_shapes == [(None, 8, 8, 1)]
    [logits] = runner.predict([x], batch_size=64)
    np.testing.assert_allclose(logits, cnn.predict(x, verbose=0), atol=1e-5)
    assert _leftovers(tmp_path) == []


def test_a_saved_model_replaces_an_earlier_one_only(cnn, tmp_path):
    to_saved_model(cnn, tmp_path / "digits")
    to_saved_model(cnn, tmp_path / "digits", verify=False)  # an earlier SavedModel: replaced
    assert _leftovers(tmp_path) == []
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(KmotError, match=r"notes already holds files and is not a SavedModel, so "
                       r"it is not replaced.*Received: a folder holding \['todo.txt'\]"):
        to_saved_model(cnn, other)
    assert (other / "todo.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("")
    with pytest.raises(KmotError, match=r"Expected directory to be a folder to write the "
                       r"SavedModel into. Received: .*file, a file"):
        to_saved_model(cnn, tmp_path / "file")


@keras.saving.register_keras_serializable(package="kmot_tests")
class EagerOnly(keras.layers.Layer):
    """Runs eagerly (NumPy on the tensor) but cannot be traced into a graph."""

    def call(self, x):
        return keras.ops.convert_to_tensor(np.asarray(x) * 2.0)

    def compute_output_shape(self, shape):
        return shape


def test_a_failed_export_leaves_nothing(tmp_path):
    model = keras.Sequential([keras.Input((4,)), EagerOnly(), keras.layers.Dense(2)])
    with pytest.raises(ConversionError, match=r"could not be exported as a SavedModel"):
        to_saved_model(model, tmp_path / "sm")
    with pytest.raises(ConversionError, match=r"could not be exported to ONNX"):
        to_onnx(model, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_pruned_zeros_show_in_the_saved_model_gzip(cnn, digits_data, tmp_path):
    x, y = digits_data[0][:256], digits_data[1][:256]
    pruned = sparsity.prune_low_magnitude(
        cnn, pruning_schedule=sparsity.ConstantSparsity(0.8, begin_step=0, frequency=1))
    pruned.compile("adam", LOSS)
    pruned.fit(x, y, batch_size=64, epochs=1, verbose=0)
    to_saved_model(cnn, tmp_path / "plain")
    to_saved_model(pruned, tmp_path / "pruned")  # the wrappers are stripped
    plain, stripped = TFSavedModel(tmp_path / "plain"), TFSavedModel(tmp_path / "pruned")
    assert len(stripped.function.variables) == len(plain.function.variables) == 8
    kernel = next(v for v in stripped.function.variables if v.shape == (1152, 64)).numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.8, abs=0.01)
    before, after = folder_size(tmp_path / "plain"), folder_size(tmp_path / "pruned")
    assert after.bytes == pytest.approx(before.bytes, rel=0.01)  # zeros take room raw...
    assert after.gzip_bytes < 0.6 * before.gzip_bytes  # ...not once compressed


def test_onnx_files_compute_what_keras_does(cnn, digits_data, onnx_files):
    x, y = digits_data[2], digits_data[3]
    expected = cnn.predict(x, verbose=0)
    outputs = {mode: ONNXModel(path, num_threads=1).predict([x])[0]
               for mode, path in onnx_files.items()}
    np.testing.assert_allclose(outputs[None], expected, atol=1e-4)
    for mode in ("dynamic", "int8"):
        assert abs(_accuracy(outputs[mode], y) - _accuracy(expected, y)) < 0.02
    sizes = {mode: path.stat().st_size for mode, path in onnx_files.items()}
    assert sizes["int8"] < sizes[None] / 3 and sizes["dynamic"] < sizes[None] / 3


def test_onnx_runtime_ops_show_what_runs_in_int8(onnx_files):
    floats, dynamic, int8 = (runtime_ops(onnx_files[m]) for m in (None, "dynamic", "int8"))
    assert not floats.is_quantized and {op.kind for op in floats.ops} <= {"float", "other"}
    assert not dynamic.is_quantized  # activations stay float between ops
    assert [op.name for op in dynamic.ops].count("ConvInteger") == 2
    names = [op.name for op in int8.ops]
    assert int8.is_quantized and int8.float_ops_between_io() == []
    assert names.count("QLinearConv") == 2 and names.count("Conv") == 0


def test_a_quantization_aware_model_exports_its_own_ranges(cnn, digits_data, tmp_path):
    x, y = digits_data[0][:512], digits_data[1][:512]
    qat = quantization.quantize_model(cnn)
    qat.compile("adam", LOSS)
    qat.fit(x, y, batch_size=64, epochs=1, verbose=0)
    path = to_onnx(qat, tmp_path / "qat.onnx")
    graph = runtime_ops(path)
    assert graph.is_quantized and graph.float_ops_between_io() == []
    [logits] = ONNXModel(path).predict([digits_data[2]])
    assert _accuracy(logits, digits_data[3]) > 0.9
    with pytest.raises(KmotError, match=r"This model is quantization-aware.*Expected "
                       r"quantize=None. Received: quantize='int8'"):
        to_onnx(qat, tmp_path / "again.onnx", quantize="int8", representative_data=x)


def test_bad_onnx_options(cnn, tmp_path):
    with pytest.raises(CalibrationDataError, match=r"needs representative data.*Received: "
                       r"representative_data=None"):
        to_onnx(cnn, tmp_path / "m.onnx", quantize="int8")
    with pytest.raises(KmotError, match=r"Expected quantize to be one of \[None, 'dynamic', "
                       r"'int8'\]. Received: quantize='float16'"):
        to_onnx(cnn, tmp_path / "m.onnx", quantize="float16")
    with pytest.raises(KmotError, match=r"Expected path to name an .onnx file. Received: "
                       r".*m.tflite"):
        to_onnx(cnn, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_onnx_package_says_how_to_install_it(cnn, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # what a missing package looks like
    with pytest.raises(KmotError, match=r'ONNX export needs the optional ONNX packages .*pip '
                       r'install "kmot\[onnx\]". Received: ModuleNotFoundError'):
        to_onnx(cnn, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(KmotError, match=r'Running an .onnx file needs .*kmot\[onnx\]'):
        require_onnx("onnxruntime", purpose="Running an .onnx file")


def test_bad_files_are_named(tmp_path, digits_data):
    val = (digits_data[2][:8], digits_data[3][:8])
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07 not a protobuf" * 10)
    with pytest.raises(ModelFileError, match=r"corrupt.onnx is not an ONNX model ONNX Runtime "
                       r"can load"):
        ONNXModel(tmp_path / "corrupt.onnx")
    with pytest.raises(EvaluationError, match=r"Candidate 'corrupt' could not be loaded. "
                       r"corrupt.onnx is not an ONNX model"):
        compare([tmp_path / "corrupt.onnx"], val, memory=False)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"plain is not a SavedModel: it holds no "
                       r"saved_model.pb.*Received: a folder holding \['weights.bin'\]"):
        TFSavedModel(tmp_path / "plain")
    with pytest.raises(EvaluationError, match=r"Candidate 'plain' could not be loaded.*not a "
                       r"SavedModel"):
        compare([tmp_path / "plain"], val, memory=False)
    with pytest.raises(ModelFileError, match=r"No such SavedModel folder.*Received: .*gone"):
        TFSavedModel(tmp_path / "gone")
    with pytest.raises(EvaluationError, match=r"No such model file for candidate 'gone'. "
                       r"Expected a .tflite, .keras or .onnx file, or a SavedModel folder"):
        compare([tmp_path / "gone"], val, memory=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match=r"broken could not be loaded as a SavedModel"):
        TFSavedModel(tmp_path / "broken")


def test_one_model_in_several_formats_is_named_by_file_name(cnn, onnx_files, digits_data):
    folder = onnx_files["int8"].parent
    to_litert(cnn, folder / "int8.tflite")
    to_saved_model(cnn, folder / "int8")
    val = (digits_data[2][:16], digits_data[3][:16])
    report = compare([folder / "int8.tflite", onnx_files["int8"], folder / "int8"], val,
                     runs=2, warmup=0, memory=False)
    assert report.names == ["int8.tflite", "int8.onnx", "int8"]
    assert [c.kind for c in report.candidates] == ["tflite", "onnx", "saved_model"]
