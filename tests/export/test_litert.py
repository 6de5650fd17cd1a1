import keras
import numpy as np
import pytest

from kmot.core import OptimizedLayer, clone_model
from kmot.errors import CalibrationDataError, ConversionError, KmotError
from kmot.export import LiteRTModel, inspect, to_litert


@pytest.fixture(scope="module")
def converted(trained_conv_bn_dense, digits_data):
    x_train = digits_data[0]
    return {
        mode: to_litert(trained_conv_bn_dense, quantize=mode, representative_data=x_train)
        for mode in (None, "float16", "dynamic", "int8", "int16x8")
    }


@pytest.mark.parametrize("mode", [None, "float16", "dynamic", "int8", "int16x8"])
def test_each_mode_agrees_with_keras(converted, trained_conv_bn_dense, digits_data, mode):
    _, _, x_test, y_test = digits_data
    keras_pred = np.argmax(trained_conv_bn_dense.predict(x_test, verbose=0), -1)
    litert_pred = np.argmax(LiteRTModel(converted[mode]).predict(x_test, batch_size=50), -1)
    assert np.mean(litert_pred == keras_pred) >= 0.98
    assert np.mean(litert_pred == y_test) >= np.mean(keras_pred == y_test) - 0.02


def test_modes_store_the_weights_they_promise(converted):
    dtypes = {mode: {w.dtype for w in inspect(content).weights if len(w.shape) > 1}
              for mode, content in converted.items()}
    assert dtypes[None] == {"float32"}
    assert "float16" in dtypes["float16"]
    assert dtypes["int8"] == {"int8"}
    # Dynamic range leaves kernels under 1024 elements in float (the converter's rule).
    dynamic = {w.dtype for w in inspect(converted["dynamic"]).weights if w.size >= 1024}
    assert dynamic == {"int8"}
    assert dtypes["int16x8"] == {"int8"}
    sizes = {mode: len(c) for mode, c in converted.items()}
    assert sizes["int8"] < 0.45 * sizes[None] and sizes["float16"] < 0.6 * sizes[None]


def test_full_integer_modes_have_no_float_compute(converted):
    for mode, act in (("int8", "int8"), ("int16x8", "int16")):
        info = inspect(converted[mode])
        assert info.float_ops_between_io() == []
        conv = next(op for op in info.ops if op.name == "CONV_2D")
        assert conv.outputs[0].dtype == act


def test_int8_io_types(trained_conv_bn_dense, digits_data):
    x_train, _, x_test, _ = digits_data
    content = to_litert(trained_conv_bn_dense, quantize="int8", representative_data=x_train,
                        inference_input_type="int8", inference_output_type="int8")
    info = inspect(content)
    assert info.input_dtypes == ["int8"] and info.output_dtypes == ["int8"]
    runner = LiteRTModel(content)
    keras_pred = np.argmax(trained_conv_bn_dense.predict(x_test, verbose=0), -1)
    assert np.mean(np.argmax(runner.predict(x_test), -1) == keras_pred) >= 0.98


def test_keep_float_leaves_named_layer_in_float(trained_conv_bn_dense, digits_data):
    content = to_litert(trained_conv_bn_dense, quantize="int8",
                        representative_data=digits_data[0], keep_float=["hidden"])
    info = inspect(content)
    fc = [op for op in info.ops if op.name == "FULLY_CONNECTED"]
    assert [op.kind for op in fc] == ["float", "int8"]
    assert next(op for op in info.ops if op.name == "CONV_2D").kind == "int8"


def test_keep_float_unknown_layer_is_named(trained_conv_bn_dense, digits_data):
    with pytest.raises(KmotError, match=r"keep_float names layers the model does not have.*\['hiden'\]"):
        to_litert(trained_conv_bn_dense, quantize="int8",
                  representative_data=digits_data[0], keep_float=["hiden"])


def test_multi_input_model_calibrated_with_a_tuple(digits_data):
    x_train = digits_data[0]
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((4,), name="extra")
    h = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    h = keras.layers.Concatenate()([h, keras.layers.Dense(4)(extra)])
    model = keras.Model([image, extra], keras.layers.Dense(3)(h))
    extra_data = np.random.default_rng(0).normal(size=(len(x_train), 4)).astype("float32")
    content = to_litert(model, quantize="int8", representative_data=(x_train, extra_data))
    assert inspect(content).float_ops_between_io() == []
    ref = np.asarray(model([x_train[:20], extra_data[:20]]))
    got = LiteRTModel(content).predict([x_train[:20], extra_data[:20]])
    assert np.max(np.abs(ref - got)) < 0.05 * np.max(np.abs(ref))


def test_nested_model_converts(digits_data):
    x_train = digits_data[0]
    features = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                                 keras.layers.Flatten()], name="features")
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Dense(10)(features(inp)))
    for mode in (None, "int8"):
        content = to_litert(model, quantize=mode, representative_data=x_train)
        got = LiteRTModel(content).predict(x_train[:20])
        assert np.max(np.abs(np.asarray(model(x_train[:20])) - got)) < 0.05


def test_wrapped_model_converts(trained_conv_bn_dense, scale_transform, digits_data):
    wrapped = clone_model(trained_conv_bn_dense, layers="hidden",
                          replace=lambda l: OptimizedLayer(l, {"kernel": [scale_transform(1.0)]}))
    x = digits_data[2][:10]
    got = LiteRTModel(to_litert(wrapped)).predict(x)
    assert np.max(np.abs(np.asarray(wrapped(x)) - got)) < 1e-4


def test_wrong_shaped_calibration_data_is_reported(trained_conv_bn_dense):
    with pytest.raises(CalibrationDataError,
                       match=r"does not fit model input .*Expected samples of shape \(8, 8, 1\).*Received: shape \(10, 64\)"):
        to_litert(trained_conv_bn_dense, quantize="int8", representative_data=np.zeros((10, 64)))


def test_missing_calibration_data_is_reported(trained_conv_bn_dense):
    with pytest.raises(CalibrationDataError, match=r"needs representative data.*Received: representative_data=None"):
        to_litert(trained_conv_bn_dense, quantize="int8")


@pytest.mark.parametrize("kwargs, message", [
    ({"quantize": "int4"}, r"quantize to be one of .*Received: quantize='int4'"),
    ({"quantize": "dynamic", "inference_input_type": "int8"}, r"inference_input_type must be one of \['float32'\]"),
    ({"quantize": "float16", "keep_float": ["hidden"]}, r"keep_float= .* applies to quantize='int8'"),
])
def test_bad_options_are_reported(trained_conv_bn_dense, kwargs, message):
    with pytest.raises(KmotError, match=message):
        to_litert(trained_conv_bn_dense, **kwargs)


def test_float_leftovers_fail_strict_int8(digits_data):
    # SIN has no integer kernel: the converter leaves it float without a word.
    inp = keras.Input((16,))
    model = keras.Model(inp, keras.layers.Lambda(keras.ops.sin)(keras.layers.Dense(16)(inp)))
    data = np.random.default_rng(0).normal(size=(32, 16)).astype("float32")
    with pytest.raises(ConversionError, match=r"left 1 op\(s\) in float: #\d+ SIN.*allow_float_fallback=True"):
        to_litert(model, quantize="int8", representative_data=data)
    content = to_litert(model, quantize="int8", representative_data=data, allow_float_fallback=True)
    assert [op.name for op in inspect(content).float_ops] == ["SIN"]


def test_converter_failure_is_a_kmot_error():
    # atan is not a LiteRT builtin: conversion fails and the error names the way out.
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(keras.ops.arctan)(inp))
    with pytest.raises(ConversionError, match=r"converter rejected the model.*allow_select_tf_ops=True"):
        to_litert(model)


def test_file_is_written_atomically(trained_conv_bn_dense, tmp_path):
    path = tmp_path / "sub" / "model.tflite"
    content = to_litert(trained_conv_bn_dense, path)
    assert path.read_bytes() == content
    assert [p.name for p in path.parent.iterdir()] == ["model.tflite"]


def test_failed_conversion_writes_nothing(trained_conv_bn_dense, tmp_path):
    path = tmp_path / "model.tflite"
    with pytest.raises(CalibrationDataError):
        to_litert(trained_conv_bn_dense, path, quantize="int8")
    assert not path.exists()


def test_keras_file_is_accepted(trained_conv_bn_dense, tmp_path, digits_data):
    path = tmp_path / "m.keras"
    trained_conv_bn_dense.save(path)
    x = digits_data[2][:5]
    got = LiteRTModel(to_litert(path)).predict(x)
    assert np.max(np.abs(np.asarray(trained_conv_bn_dense(x)) - got)) < 1e-4
    with pytest.raises(KmotError, match=r"No such model file.*Received: .*missing.keras"):
        to_litert(tmp_path / "missing.keras")
