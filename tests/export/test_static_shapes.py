"""Flatten / Reshape export as one RESHAPE with a constant shape, at any batch size."""

import keras
import numpy as np
import pytest

from kmot.export import LiteRTModel, inspect, to_litert

L = keras.layers
SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}


def _model(*middle, input_shape=(8, 8, 1)):
    return keras.Sequential([keras.Input(input_shape), L.Conv2D(4, 3, activation="relu"), *middle,
                             L.Dense(10)])


@pytest.mark.parametrize("middle", [
    (L.Flatten(),),
    (L.Reshape((-1,)),),
    (L.Reshape((9, 16)), L.Flatten()),
    (L.Reshape((36, -1)), L.GlobalAveragePooling1D()),
], ids=["flatten", "reshape-1", "reshape-then-flatten", "reshape-to-sequence"])
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_reshape_has_no_runtime_shape_ops_and_any_batch_works(middle, quantize, digits_data):
    x = digits_data[0][:37]
    model = _model(*middle)
    content = to_litert(model, quantize=quantize, representative_data=x)
    ops = inspect(content).op_counts
    assert not SHAPE_OPS & set(ops), ops
    # At most one RESHAPE per layer (the converter merges consecutive ones).
    assert 1 <= ops["RESHAPE"] <= sum(isinstance(layer, (L.Flatten, L.Reshape)) for layer in middle)
    runner = LiteRTModel(content)
    tolerance = 1e-4 if quantize is None else 0.1
    for batch in (1, 37):  # the batch dimension stays dynamic
        got = runner.predict(x[:batch], batch_size=batch)
        assert got.shape == (batch, 10)
        assert np.max(np.abs(np.asarray(model(x[:batch])) - got)) < tolerance


def test_export_leaves_the_layers_unchanged(digits_data):
    flatten_call, reshape_call = L.Flatten.call, L.Reshape.call
    to_litert(_model(L.Reshape((-1,))))
    assert (L.Flatten.call, L.Reshape.call) == (flatten_call, reshape_call)


def test_unknown_dims_keep_keras_reshape(digits_data):
    # A variable-length sequence: the flattened size is only known at run time.
    model = keras.Sequential([keras.Input((None, 4)), L.Dense(3), L.Reshape((-1,))])
    content = to_litert(model)
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    runner = LiteRTModel(content)
    runner.interpreter.resize_tensor_input(runner.interpreter.get_input_details()[0]["index"],
                                           x.shape, strict=False)
    runner.interpreter.allocate_tensors()
    runner.interpreter.set_tensor(runner.interpreter.get_input_details()[0]["index"], x)
    runner.interpreter.invoke()
    got = runner.interpreter.get_tensor(runner.interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-5)
