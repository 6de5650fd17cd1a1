import keras
import numpy as np
import pytest

from kmot.export.layer_error import quantization_error


@pytest.fixture(scope="module")
def report(trained_conv_bn_dense, digits_data):
    return quantization_error(trained_conv_bn_dense, digits_data[0], num_samples=32)


def test_every_compute_layer_is_measured(report):
    labels = [r.label for r in report.layers]
    assert any("conv" in label for label in labels)
    assert "hidden" in labels and "logits" in labels
    assert report.num_samples == 32
    for r in report.layers:
        assert r.rmse >= 0 and np.isfinite(r.snr_db)


def test_int8_errors_are_small_but_real(report):
    # int8 keeps ~8 bits: SNR well above 20 dB, yet not lossless.
    final = report.layers[-1]
    assert 20 < final.snr_db < 80
    assert final.rmse > 0


def test_a_badly_quantizable_layer_is_found_worst(digits_data):
    # The top-left pixel of every digit is 0. A huge weight on it changes nothing
    # in float, but it sets the int8 scale of each output channel, so the real
    # weights round to almost nothing: the loss happens inside that layer.
    keras.utils.set_random_seed(0)
    x = digits_data[0]
    assert np.all(x[:, 0, 0, 0] == 0)
    inp = keras.Input((8, 8, 1))
    conv = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp))
    lossy = keras.layers.Dense(16, activation="relu", name="lossy")
    h = keras.layers.Concatenate()([keras.layers.Dense(16, name="wide")(conv),
                                    lossy(keras.layers.Flatten()(inp))])
    model = keras.Model(inp, keras.layers.Dense(4, name="out")(h))
    kernel = lossy.kernel.numpy()
    kernel[0, :] = 1e3
    lossy.kernel.assign(kernel)
    report = quantization_error(model, x, num_samples=32)
    worst = report.worst(1)[0]
    assert worst.label == "lossy"
    assert worst.snr_drop_db > 20
    assert max(r.snr_drop_db for r in report.layers if r.label != "lossy") < 20


def test_report_serializes(report):
    import json

    data = report.to_dict()
    assert json.loads(json.dumps(data))["quantize"] == "int8"
    assert "snr dB" in report.format_table()
