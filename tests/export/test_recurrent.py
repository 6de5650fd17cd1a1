"""Recurrent layers reach LiteRT as builtin ops (unrolled at export): no Flex, in
float, dynamic range and full int8, the model left as it was."""

import keras
import numpy as np
import pytest

from kmot.errors import ConversionError
from kmot.export import LiteRTModel, inspect, to_litert


def recurrent(kind, steps=40):
    i = keras.Input((steps, 1))
    if kind == "bidirectional":
        x = keras.layers.Bidirectional(keras.layers.LSTM(12))(i)
    elif kind == "stacked":
        x = keras.layers.LSTM(12, return_sequences=True)(i)
        x = keras.layers.GRU(8)(x)
    elif kind == "sequences":  # return_sequences to the output: one Dense per step
        x = keras.layers.GRU(8, return_sequences=True)(i)
        return keras.Model(i, keras.layers.Dense(3)(x))
    else:
        x = getattr(keras.layers, kind)(12)(i)
    return keras.Model(i, keras.layers.Dense(10)(x))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN", "bidirectional", "stacked",
                                  "sequences"])
def test_each_recurrent_kind_converts_to_builtin_ops(kind):
    keras.utils.set_random_seed(0)
    model = recurrent(kind)
    x = np.random.default_rng(0).random((32, 40, 1), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    for quantize in (None, "dynamic", "int8"):
        content = to_litert(model, quantize=quantize,
                            representative_data=x if quantize == "int8" else None)
        info = inspect(content)
        names = {op.name for op in info.ops}
        assert not any(n.startswith("Flex") or n == "CUSTOM" for n in names), names
        if quantize == "int8":
            assert info.is_quantized and info.float_ops_between_io() == []
        got = LiteRTModel(content).predict(x, batch_size=16)  # the batch stays dynamic
        tolerance = {None: 1e-5, "dynamic": 0.02, "int8": 0.1}[quantize]
        assert np.abs(got - expected).max() < tolerance * max(1.0, np.abs(expected).max())
    layers = [l for l in model.layers if isinstance(l, keras.layers.RNN)]
    assert all(not l.unroll for l in layers)  # export left the model as it was


@pytest.mark.slow
def test_a_trained_lstm_keeps_its_accuracy_in_int8_and_int16x8():
    """MNIST-1D as a 40-step sequence (an LSTM reaches about 43% here, a hard task for
    it; what counts is that the LiteRT files keep what the Keras model has)."""
    from kmot.data import mnist1d

    keras.utils.set_random_seed(0)
    x, y, xt, yt = mnist1d(num_samples=2000)
    i = keras.Input((40, 1))
    model = keras.Model(i, keras.layers.Dense(10)(keras.layers.LSTM(32)(i)))
    model.compile(keras.optimizers.Adam(5e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    keras_pred = model.predict(xt, verbose=0).argmax(-1)
    accuracy = np.mean(keras_pred == yt)
    assert accuracy > 0.3  # it learned something: the comparison means something
    int8 = LiteRTModel(to_litert(model, quantize="int8", representative_data=x))
    assert np.mean(int8.predict(xt).argmax(-1) == yt) >= accuracy - 0.02
    int16 = LiteRTModel(to_litert(model, quantize="int16x8", representative_data=x))
    assert np.mean(int16.predict(xt).argmax(-1) == keras_pred) >= 0.98


def test_unknown_time_steps_are_named_before_conversion():
    i = keras.Input((None, 3))
    model = keras.Model(i, keras.layers.Dense(2)(keras.layers.LSTM(4, name="encoder")(i)))
    with pytest.raises(ConversionError, match=r"\['encoder'\].*no fixed number of time "
                                              r"steps.*keras.Input\(\(40, features\)\)"):
        to_litert(model)
