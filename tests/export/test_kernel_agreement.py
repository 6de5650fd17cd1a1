import numpy as np
import pytest

from kmot.errors import ConversionError
from kmot.export import LiteRTModel, kernel_agreement, to_litert


@pytest.fixture(scope="module")
def int8_file(trained_conv_bn_dense, digits_data):
    return to_litert(trained_conv_bn_dense, quantize="int8", representative_data=digits_data[0])


def test_a_kernel_set_agrees_with_itself(int8_file, digits_data):
    x_test = digits_data[2]
    assert kernel_agreement(int8_file, x_test, kernels=("builtin", "builtin")) == 1.0


def test_default_and_builtin_kernels_agree_on_a_well_trained_model(int8_file, digits_data):
    # XNNPACK and LiteRT's own kernels round int8 differently; a model with margins
    # still decides the same on (almost) every test digit.
    x_test = digits_data[2]
    agreement = kernel_agreement(int8_file, x_test, num_samples=200)
    assert 0.98 <= agreement <= 1.0


def test_each_kernel_set_runs_the_file(int8_file, digits_data):
    x_test = digits_data[2][:16]
    outs = {k: LiteRTModel(int8_file, kernels=k).predict(x_test)
            for k in ("default", "builtin", "reference")}
    for out in outs.values():
        assert out.shape == (16, 10) and np.all(np.isfinite(out))
    # reference and builtin kernels share LiteRT's integer arithmetic for these ops
    np.testing.assert_array_equal(outs["builtin"].argmax(-1), outs["reference"].argmax(-1))


def test_an_unknown_kernel_set_names_the_choices(int8_file):
    with pytest.raises(ConversionError, match=r"'builtin', 'default', 'reference'.*kernels='gpu'"):
        LiteRTModel(int8_file, kernels="gpu")


def test_no_inputs_is_a_clear_error(int8_file):
    with pytest.raises(ConversionError, match="at least one input"):
        kernel_agreement(int8_file, np.zeros((0, 8, 8, 1), np.float32))
