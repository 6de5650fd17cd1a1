import numpy as np
import pytest
import tensorflow as tf

from kmot.errors import CalibrationDataError
from kmot.export.calibration import InputSpec, calibration_samples

ONE = [InputSpec("x", (None, 4, 2), "float32")]
TWO = [InputSpec("a", (None, 3), "float32"), InputSpec("b", (None, 2), "float32")]


def _shapes(samples):
    return [[a.shape for a in s] for s in samples]


def test_array_is_sampled_evenly_with_budget():
    x = np.arange(100 * 8, dtype="float32").reshape(100, 4, 2)
    samples = calibration_samples(x, ONE, num_samples=5)
    assert _shapes(samples) == [[(1, 4, 2)]] * 5
    assert [int(s[0][0, 0, 0]) // 8 for s in samples] == [0, 25, 50, 74, 99]


def test_forms_agree():
    a = np.random.rand(6, 3).astype("float32")
    b = np.random.rand(6, 2).astype("float32")

    def gen():
        for i in range(6):
            yield a[i], b[i]

    forms = [
        (a, b),
        {"a": a, "b": b},
        tf.data.Dataset.from_tensor_slices((a, b)).batch(4),
        tf.data.Dataset.from_tensor_slices(((a, b), np.zeros(6))),
        gen,
    ]
    for form in forms:
        samples = calibration_samples(form, TWO, num_samples=6)
        np.testing.assert_allclose(np.concatenate([s[1] for s in samples]), b)


def test_xy_pairs_drop_labels():
    x = np.random.rand(5, 4, 2).astype("float32")
    samples = calibration_samples((x, np.arange(5)), ONE)
    assert len(samples) == 5


def test_default_budget_caps_samples():
    samples = calibration_samples(np.zeros((1000, 4, 2)), ONE)
    assert len(samples) == 200


@pytest.mark.parametrize("data, specs, message", [
    (None, ONE, r"needs representative data"),
    (np.zeros((3, 5, 2)), ONE, r"Expected samples of shape \(4, 2\).*Received: shape \(3, 5, 2\)"),
    ((np.zeros((3, 3)),), TWO, r"The model has 2 input\(s\).*Received: a sample of 1 arrays"),
    ({"a": np.zeros((3, 3))}, TWO, r"Expected keys \['a', 'b'\]"),
    (np.zeros((3, 3)), TWO, r"The model has 2 inputs.*Received: a single array"),
    ("text", ONE, r"Received: str"),
    (lambda: 3, ONE, r"must return an iterable"),
    (np.zeros((2, 4, 2)), ONE, None),
])
def test_errors_name_the_problem(data, specs, message):
    if message is None:  # the control case: valid data passes
        assert len(calibration_samples(data, specs)) == 2
        return
    with pytest.raises(CalibrationDataError, match=message):
        calibration_samples(data, specs)


def test_empty_data_is_reported():
    with pytest.raises(CalibrationDataError, match="is empty"):
        calibration_samples(np.zeros((0, 4, 2)), ONE)


def test_integer_input_rejects_float_data():
    with pytest.raises(CalibrationDataError, match=r"takes integers.*astype\('int32'\)"):
        calibration_samples(np.zeros((2, 5)), [InputSpec("tokens", (None, 5), "int32")])
