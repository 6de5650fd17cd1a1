import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import warnings

import keras
import numpy as np
import pytest

from kmot.errors import InspectionError
from kmot.export.inspect import inspect

CONV_VALUES = np.array([-0.5, -0.25, 0.25, 0.5], "float32")  # k = 4 distinct values


def _model_with_known_weights():
    """Conv kernel clustered to 4 values; Dense kernel exactly 50% zeros."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(10, name="dense")])
    rng = np.random.default_rng(0)
    conv, dense = model.get_layer("conv"), model.get_layer("dense")
    conv.kernel.assign(rng.choice(CONV_VALUES, size=conv.kernel.shape))
    # Nonzero values stay far from 0, so int8 rounding adds no zeros of its own.
    magnitude = rng.uniform(0.1, 0.5, size=dense.kernel.shape) * rng.choice([-1, 1], dense.kernel.shape)
    mask = np.zeros(magnitude.size, bool)
    mask[rng.permutation(magnitude.size)[: magnitude.size // 2]] = True
    dense.kernel.assign(np.where(mask.reshape(magnitude.shape), 0.0, magnitude).astype("float32"))
    return model


def _convert(model, quantize=False, io_type=None, buffer_offset=False):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rng = np.random.default_rng(1)
        conv.representative_dataset = lambda: ([rng.random((1, 8, 8, 1), "float32")] for _ in range(20))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_type is not None:
        conv.inference_input_type = conv.inference_output_type = io_type
    # Private flag: stores every constant after the flatbuffer, as files over 2 GB must.
    conv._experimental_use_buffer_offset = buffer_offset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Statistics for quantized inputs ..."
        return conv.convert()


@pytest.fixture(scope="module")
def keras_model():
    return _model_with_known_weights()


@pytest.fixture(scope="module")
def exports(keras_model):
    import tensorflow as tf

    return {
        "float": _convert(keras_model),
        "int8": _convert(keras_model, quantize=True),
        "int8_io": _convert(keras_model, quantize=True, io_type=tf.int8),
        "external": _convert(keras_model, buffer_offset=True),
    }


def _kernel(info, op_name):
    return next(w for w in info.weights if w.op == op_name and not w.is_bias)


def test_float_model_ops_and_kinds(exports):
    info = inspect(exports["float"])
    names = [op.name for op in info.ops]
    assert names[0] == "CONV_2D" and names[-1] == "FULLY_CONNECTED"
    kinds = {op.name: op.kind for op in info.ops}
    assert kinds["CONV_2D"] == kinds["FULLY_CONNECTED"] == kinds["RESHAPE"] == "float"
    shape_math = [op for op in info.ops
                  if {t.dtype for t in op.inputs + op.outputs if not t.is_constant} == {"int32"}]
    assert shape_math and {op.kind for op in shape_math} == {"other"}
    assert not info.is_quantized
    assert info.input_dtypes == ["float32"] and info.output_dtypes == ["float32"]
    assert info.op_counts["CONV_2D"] == 1 and sum(info.op_counts.values()) == len(info.ops)
    # An unquantized model has no I/O boundary: every float op lies between input and output.
    assert info.float_ops_between_io() == info.float_ops
    assert {w.dtype for w in info.weights} == {"float32"}


def test_int8_model_is_quantized_inside_float_io(exports):
    info = inspect(exports["int8"])
    assert info.is_quantized
    assert info.ops[0].name == "QUANTIZE" and info.ops[0].kind == "quantize"
    assert info.ops[-1].name == "DEQUANTIZE" and info.ops[-1].kind == "dequantize"
    assert info.float_ops_between_io() == [] and info.float_ops == []
    assert info.input_dtypes == ["float32"]
    conv = next(op for op in info.ops if op.name == "CONV_2D")
    assert conv.kind == "int8"
    kernel = next(t for t in conv.inputs if t.is_constant and len(t.shape) == 4)
    assert kernel.dtype == "int8"
    assert len(kernel.scales) == kernel.shape[kernel.quantized_dimension] == 4
    assert kernel.zero_points == (0, 0, 0, 0)
    assert {w.dtype for w in info.weights if not w.is_bias} == {"int8"}


def test_int8_io_model_has_no_boundary_ops(exports):
    info = inspect(exports["int8_io"])
    assert info.input_dtypes == ["int8"] and info.output_dtypes == ["int8"]
    assert "QUANTIZE" not in info.op_counts and "DEQUANTIZE" not in info.op_counts
    assert info.float_ops_between_io() == []


@pytest.mark.parametrize("export", ["float", "int8", "external"])
def test_sparsity_of_a_half_zero_kernel(exports, export):
    dense = _kernel(inspect(exports[export]), "FULLY_CONNECTED")
    assert dense.shape == (10, 144) and dense.size == 1440
    assert abs(dense.sparsity - 0.5) <= 0.01
    assert dense.zeros == round(dense.sparsity * dense.size)


def test_clustered_kernel_unique_values(exports):
    conv = _kernel(inspect(exports["float"]), "CONV_2D")
    assert conv.unique_values <= len(CONV_VALUES)
    assert conv.max_unique_per_channel == conv.unique_values
    quantized = _kernel(inspect(exports["int8"]), "CONV_2D")
    assert quantized.max_unique_per_channel <= len(CONV_VALUES)
    dense = _kernel(inspect(exports["float"]), "FULLY_CONNECTED")
    assert dense.unique_values > 100


def test_constant_returns_the_stored_values(exports, keras_model):
    info = inspect(exports["float"])
    kernel = info.constant(_kernel(info, "FULLY_CONNECTED").name)
    # LiteRT stores a Dense kernel as (units, inputs): Keras' kernel transposed.
    np.testing.assert_array_equal(kernel, keras_model.get_layer("dense").kernel.numpy().T)
    quantized = inspect(exports["int8"])
    kernel8 = quantized.constant(_kernel(quantized, "FULLY_CONNECTED").name)
    assert kernel8.dtype == np.int8 and kernel8.shape == (10, 144)
    with pytest.raises(InspectionError, match=r"Expected the name of a constant tensor.*Received: name='nope'"):
        info.constant("nope")


def test_buffers_stored_outside_the_flatbuffer(exports):
    inline, external = inspect(exports["float"]), inspect(exports["external"])
    assert external.weights == inline.weights
    for w in inline.weights:
        np.testing.assert_array_equal(external.constant(w.name), inline.constant(w.name))


def test_sizes(exports):
    info = inspect(exports["float"])
    assert info.size_bytes == len(exports["float"])
    assert 0 < info.gzip_bytes < info.size_bytes
    assert inspect(exports["int8"]).size_bytes < info.size_bytes


def test_accepts_bytes_and_paths(exports, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(exports["int8"])
    from_bytes = inspect(exports["int8"]).to_dict()
    assert inspect(path).to_dict() == from_bytes == inspect(str(path)).to_dict()
    assert inspect(bytearray(exports["int8"])).to_dict() == from_bytes


def test_to_dict_is_json_and_table_is_readable(exports):
    for content in exports.values():
        info = inspect(content)
        data = json.loads(json.dumps(info.to_dict()))
        assert data["size_bytes"] == info.size_bytes and len(data["ops"]) == len(info.ops)
    text = str(inspect(exports["int8"]))
    assert "FULLY_CONNECTED" in text and "int8" in text and "gzip" in text


def test_missing_file_is_reported(tmp_path):
    missing = tmp_path / "missing.tflite"
    with pytest.raises(InspectionError, match=r"No such file: .*Received: path='.*missing\.tflite'"):
        inspect(missing)


@pytest.mark.parametrize("content", [b"definitely not a model", b"", b"PK\x03\x04keras-zip"])
def test_garbage_bytes_are_reported(content):
    with pytest.raises(InspectionError, match=r"Expected a LiteRT flatbuffer.*b'TFL3'.*Received: \d+ bytes"):
        inspect(content)


def test_truncated_flatbuffer_is_reported(exports):
    with pytest.raises(InspectionError, match=r"Expected a complete LiteRT flatbuffer.*truncated"):
        inspect(exports["float"][:64])


def test_other_types_are_reported(keras_model):
    with pytest.raises(InspectionError, match=r"Received: Sequential"):
        inspect(keras_model)
