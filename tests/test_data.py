"""Built-in data and models: the benchmark protocol's split and CNN sizes."""

import numpy as np
import pytest

from kmot.data import digits, digits_cnn


def test_digits_split_follows_the_protocol():
    x_train, y_train, x_test, y_test = digits(seed=0)
    assert x_train.shape == (1400, 8, 8, 1) and x_test.shape == (397, 8, 8, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10))
    # Another seed shuffles differently; the same seed reproduces the split.
    assert not np.array_equal(digits(seed=1)[1], y_train)
    np.testing.assert_array_equal(digits(seed=0)[3], y_test)


def test_digits_cnn_sizes():
    assert digits_cnn().count_params() == 84_010
    student = digits_cnn(filters=(16, 32), units=32, compile=False, name="digits_student")
    assert student.count_params() == 42_026
    assert student.name == "digits_student" and not student.compiled
    assert student.output_shape == (None, 10)


@pytest.mark.parametrize("kwargs", [{"filters": (16,)}, {"units": 0}, {"filters": (8, 2.5)}])
def test_digits_cnn_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="digits_cnn needs two positive int"):
        digits_cnn(**kwargs)
