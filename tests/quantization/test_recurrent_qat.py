"""QAT of LSTMs, GRUs and Bidirectional layers of them: their unrolled int8 files agree
with the QAT Keras models; a configuration without a quantized cell stays float with
one warning naming it."""

import warnings

import keras
import numpy as np

import kmot
from kmot.data import mnist1d
from kmot.export import LiteRTModel, inspect, to_litert
import pytest

from kmot.quantization.recurrent import QuantizedBidirectional, QuantizedGRU, QuantizedLSTM


def _compile(model, rate):
    model.compile(keras.optimizers.Adam(rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def test_qat_lstm_is_int8_per_step_and_agrees_with_keras():
    keras.utils.set_random_seed(0)
    x, y, xt, _ = mnist1d(num_samples=600)
    x, xt = x[:, ::4], xt[:, ::4]  # 10 steps: a smaller unrolled file, same kind of ops
    i = keras.Input((10, 1))
    model = keras.Model(i, keras.layers.Dense(10)(keras.layers.LSTM(16)(i)))
    _compile(model, 5e-3).fit(x, y, epochs=2, batch_size=64, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an LSTM needs no float fallback
        qat = _compile(kmot.quantization.quantize_model(model), 5e-4)
    assert any(isinstance(layer, QuantizedLSTM) for layer in qat.layers)
    qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
    expected = qat.predict(xt, verbose=0)
    content = to_litert(qat)  # strict int8: raises on a float op
    info = inspect(content)
    assert info.float_ops_between_io() == []
    assert info.op_counts["LOGISTIC"] == 3 * 10  # unrolled: three gates per step
    got = LiteRTModel(content).predict(xt)
    agreement = np.mean(got.argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.95, agreement


def _recurrent_model(kind):
    i = keras.Input((10, 1))
    if kind == "gru":
        h = keras.layers.GRU(16)(i)
    elif kind == "bidirectional_gru":
        h = keras.layers.Bidirectional(keras.layers.GRU(8))(i)
    else:  # every step of both directions, then pooled
        h = keras.layers.GlobalAveragePooling1D()(keras.layers.Bidirectional(
            keras.layers.LSTM(8, return_sequences=True))(i))
    return keras.Model(i, keras.layers.Dense(10)(h))


@pytest.mark.parametrize("kind,kind_class", [
    ("gru", QuantizedGRU), ("bidirectional_gru", QuantizedBidirectional),
    ("bidirectional_lstm_sequences", QuantizedBidirectional)])
def test_qat_gru_and_bidirectional_are_int8_and_match_their_files(kind, kind_class, tmp_path):
    keras.utils.set_random_seed(0)
    x, y, xt, _ = mnist1d(num_samples=600)
    x, xt = x[:, ::4], xt[:, ::4]
    model = _recurrent_model(kind)
    _compile(model, 5e-3).fit(x, y, epochs=2, batch_size=64, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing stays float
        qat = _compile(kmot.quantization.quantize_model(model), 5e-4)
    assert any(isinstance(layer, kind_class) for layer in qat.layers)
    qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
    expected = qat.predict(xt, verbose=0)
    content = to_litert(qat)  # strict int8: raises on a float op
    assert inspect(content).float_ops_between_io() == []
    got = LiteRTModel(content).predict(xt)
    # The file computes what the model simulates to a few steps of the logits' int8
    # grid (their range / 255): 4-7 steps measured. A Bidirectional whose directions
    # kept grids of their own (the converter concatenates them on one) was 27-39 off.
    error = np.abs(got - expected).max()
    assert error < 0.05 * np.ptp(expected), (error, np.ptp(expected))
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.95
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(xt, verbose=0), expected, atol=1e-5)


def test_a_gru_without_a_quantized_cell_stays_float_with_one_warning():
    i = keras.Input((40, 1))
    gru = keras.layers.GRU(8, reset_after=False, name="gru")
    model = keras.Model(i, keras.layers.Dense(10)(gru(i)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = kmot.quantization.quantize_model(model)
    messages = [str(w.message) for w in caught if "gru (GRU)" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    assert type(qat.get_layer("gru")) is keras.layers.GRU


def test_bidirectional_lstm_kernels_prune_and_cluster():
    keras.utils.set_random_seed(0)
    x, y, _, _ = mnist1d(num_samples=300)
    x = x[:, ::4]
    i = keras.Input((10, 1))
    model = keras.Model(i, keras.layers.Dense(10)(
        keras.layers.Bidirectional(keras.layers.LSTM(8))(i)))
    pruned = _compile(kmot.sparsity.prune_low_magnitude(
        model, pruning_schedule=kmot.sparsity.ConstantSparsity(0.5, 0)), 1e-3)
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[kmot.sparsity.UpdatePruningStep()])
    clustered = _compile(kmot.clustering.cluster_weights(
        kmot.sparsity.strip_pruning(pruned), number_of_clusters=16, preserve_sparsity=True), 1e-3)
    clustered.fit(x, y, epochs=1, verbose=0)
    final = kmot.clustering.strip_clustering(clustered)
    kernels = {v.path: np.asarray(v.numpy()) for v in final.layers[1].weights
               if v.path.endswith("kernel")}
    assert len(kernels) == 4, sorted(kernels)  # forward and backward, input and recurrent
    for path, value in kernels.items():
        assert abs(np.mean(value == 0) - 0.5) < 0.05, path
        assert np.unique(value).size <= 16, path
