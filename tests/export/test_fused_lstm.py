"""LSTMs as LiteRT's fused UNIDIRECTIONAL_SEQUENCE_LSTM op (to_litert(fused_lstm=True)):
one op per LSTM, the Keras model's values, int8 with its int16 cell state, and the
op's state reset between runs."""

import keras
import numpy as np
import pytest

from kmot.errors import ConversionError, KmotError
from kmot.export import LiteRTModel, inspect, to_litert

FUSED = "UNIDIRECTIONAL_SEQUENCE_LSTM"


def lstm_model(kind, batch_size=None, bias=True):
    i = keras.Input((12, 3), batch_size=batch_size)
    if kind == "stacked":  # the first gives its sequence, the second its last output
        x = keras.layers.LSTM(16, return_sequences=True)(i)
        x = keras.layers.LSTM(8, use_bias=bias)(x)
    elif kind == "bidirectional":
        x = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True))(i)
        x = keras.layers.GlobalAveragePooling1D()(x)
    else:
        x = keras.layers.LSTM(8, go_backwards=True, use_bias=bias)(i)
    return keras.Model(i, keras.layers.Dense(4)(x))


def data(n=64):
    return np.random.default_rng(0).normal(size=(n, 12, 3)).astype("float32")


@pytest.mark.parametrize("kind", ["stacked", "bidirectional", "backwards"])
def test_each_lstm_becomes_one_fused_op_in_float_and_int8(kind):
    keras.utils.set_random_seed(0)
    model = lstm_model(kind, bias=kind != "backwards")
    x = data()
    expected = model.predict(x, verbose=0)
    for quantize in (None, "int8"):
        content = to_litert(model, quantize=quantize, fused_lstm=True,
                            representative_data=x if quantize else None)
        names = [op.name for op in inspect(content).ops]
        assert names.count(FUSED) == 2 if kind != "backwards" else names.count(FUSED) == 1
        assert "LOGISTIC" not in names and "TANH" not in names  # nothing left unrolled
        runner = LiteRTModel(content)
        assert runner.fixed_batch == 1 and runner.stateful
        got = runner.predict(x, batch_size=8)  # run one sample at a time, whatever asked
        assert got.shape == expected.shape
        if quantize is None:
            np.testing.assert_allclose(got, expected, atol=1e-5)
        else:
            info = inspect(content)
            assert info.is_quantized and info.float_ops_between_io() == []
            tensors = runner.interpreter.get_tensor_details()
            assert any(t["dtype"] == np.int16 for t in tensors)  # the integer cell state
            assert np.abs(got - expected).max() < 0.1 * max(1.0, np.abs(expected).max())
    from kmot.export.fused_lstm import fusable_lstms

    assert all("inner_loop" not in vars(l) for l in fusable_lstms(model)[0])  # as it was


@pytest.mark.parametrize("samples, bias", [(10, True), (64, False)])
def test_a_fused_int8_file_that_does_not_compute_the_model_is_refused(samples, bias):
    """Stacked fused int8 LSTMs calibrated on 10 samples, or the second without bias,
    come out of this converter (TF 2.21) constant; whatever the converter does, the
    file kmot returns computes the model or the call fails saying so."""
    keras.utils.set_random_seed(0)
    model = lstm_model("stacked", bias=bias)
    x = data(samples)
    try:
        content = to_litert(model, quantize="int8", representative_data=x, fused_lstm=True)
    except ConversionError as err:
        assert "does not compute model" in str(err) and "more representative_data" in str(err)
    else:
        expected = model.predict(x, verbose=0)
        got = LiteRTModel(content).predict(x)
        assert np.sqrt(np.mean((got - expected) ** 2)) < 0.5 * np.std(expected)


def test_the_fused_state_is_reset_before_every_run():
    """The op keeps its state in variable tensors: run twice on the same sequence in a
    bare interpreter and the second answer differs. LiteRTModel resets it."""
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    model = lstm_model("backwards")
    content = to_litert(model, fused_lstm=True)
    x = data(1)
    bare = Interpreter(model_content=content)
    bare.allocate_tensors()
    index, out = bare.get_input_details()[0]["index"], bare.get_output_details()[0]["index"]
    answers = []
    for _ in range(2):
        bare.set_tensor(index, x)
        bare.invoke()
        answers.append(bare.get_tensor(out).copy())
    assert np.abs(answers[0] - answers[1]).max() > 1e-3
    runner = LiteRTModel(content)
    first, second = runner.predict(x), runner.predict(x)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, answers[0], atol=1e-6)
    with pytest.raises(ConversionError, match="batch size 1 only"):
        runner.time_invoke(data(2), runs=1, warmup=0)


def test_fused_lstm_refuses_what_it_cannot_do():
    keras.utils.set_random_seed(0)
    with pytest.raises(KmotError, match="int16x8"):
        to_litert(lstm_model("backwards"), quantize="int16x8", representative_data=data(),
                  fused_lstm=True)
    i = keras.Input((12, 3))
    gru = keras.Model(i, keras.layers.GRU(4, name="only_gru")(i))
    with pytest.raises(KmotError, match="no LSTM that LiteRT's fused op computes"):
        to_litert(gru, fused_lstm=True)
    with pytest.raises(KmotError, match=r"fixes its batch to \[4\]"):
        to_litert(lstm_model("backwards", batch_size=4), fused_lstm=True)
    # a mask keeps the LSTM unrolled (the fused op has no mask input): said, not hidden
    i = keras.Input((12, 3))
    masked = keras.layers.LSTM(4, name="masked")(keras.layers.Masking()(i))
    with pytest.raises(ConversionError, match="fused 0 of the 1 LSTMs.*mask"):
        to_litert(keras.Model(i, masked), fused_lstm=True)


def test_an_lstm_the_op_cannot_compute_stays_unrolled_with_a_warning():
    keras.utils.set_random_seed(0)
    i = keras.Input((12, 3))
    x = keras.layers.LSTM(8, return_sequences=True, name="plain")(i)
    x = keras.layers.LSTM(4, activation="relu", name="relu_lstm")(x)
    model = keras.Model(i, x)
    with pytest.warns(UserWarning, match=r"relu_lstm stay unrolled \(relu_lstm: activation=relu"):
        content = to_litert(model, fused_lstm=True)
    names = [op.name for op in inspect(content).ops]
    assert names.count(FUSED) == 1 and "RELU" in names
    x = data()
    np.testing.assert_allclose(LiteRTModel(content).predict(x), model.predict(x, verbose=0),
                               atol=1e-5)


def test_kmot_convert_fused_lstm(tmp_path):
    from typer.testing import CliRunner

    from kmot.cli import app

    keras.utils.set_random_seed(0)
    lstm_model("bidirectional").save(tmp_path / "model.keras")
    np.savez(tmp_path / "calib.npz", x=data())
    out = tmp_path / "fused.tflite"
    result = CliRunner().invoke(app, [
        "convert", str(tmp_path / "model.keras"), "-o", str(out), "--quantize", "int8",
        "--calibration", str(tmp_path / "calib.npz"), "--fused-lstm"])
    assert result.exit_code == 0, result.output
    assert [op.name for op in inspect(out).ops].count(FUSED) == 2
    refused = CliRunner().invoke(app, ["convert", str(tmp_path / "model.keras"), "-o",
                                       str(tmp_path / "m.onnx"), "--fused-lstm"])
    assert refused.exit_code != 0 and "--fused-lstm" in refused.output
