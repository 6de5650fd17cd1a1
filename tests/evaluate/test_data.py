"""Validation data: accepted forms, and clear errors when it does not fit a model."""

import keras
import numpy as np
import pytest

from kmot.errors import EvaluationError
from kmot.evaluate import compare
from kmot.evaluate.data import InputSpec, load_data
from kmot.export import to_litert

IMAGE = [InputSpec("image", (None, 8, 8, 1), "float32")]


def test_tuple_and_npz_forms_give_the_same_inputs(tmp_path):
    x, y = np.random.rand(5, 8, 8, 1).astype("float32"), np.arange(5)
    np.savez(tmp_path / "v.npz", x=x, y=y)
    for data in ((x, y), tmp_path / "v.npz", str(tmp_path / "v.npz"), {"x": x, "y": y}):
        loaded = load_data(data)
        assert loaded.num_samples == 5
        np.testing.assert_array_equal(loaded.inputs_for(IMAGE, "m")[0], x)
        np.testing.assert_array_equal(loaded.y, y)


def test_labels_are_optional():
    assert load_data((np.zeros((3, 8, 8, 1)), None)).y is None


def test_integer_pixels_are_accepted_for_a_float_input():
    x = load_data((np.ones((2, 8, 8, 1), "uint8"), None)).inputs_for(IMAGE, "m")[0]
    assert x.dtype == np.float32


@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 7, 8, 1), (4, 8, 8, 3)])
def test_wrong_shape_names_input_expected_and_received(shape):
    data = load_data((np.zeros(shape, "float32"), np.zeros(4)))
    with pytest.raises(EvaluationError, match=r"does not fit input 'image' shape=\(None, 8, 8, 1\)"
                       r".*of candidate 'int8'.*Received: shape \(4, "):
        data.inputs_for(IMAGE, "int8")


def test_missing_batch_axis_gets_a_hint():
    data = load_data({"x": np.zeros((8, 8, 1), "float32")})
    with pytest.raises(EvaluationError, match=r"Add the batch axis"):
        data.inputs_for(IMAGE, "m")


def test_string_data_is_rejected():
    data = load_data((np.array([["a"] * 8] * 8)[None, ..., None], None))
    with pytest.raises(EvaluationError, match=r"takes numbers. Received: dtype <U1"):
        data.inputs_for(IMAGE, "m")


def test_float_data_for_an_integer_input_is_rejected():
    ids = [InputSpec("tokens", (None, 4), "int32")]
    with pytest.raises(EvaluationError, match=r"takes integers. Received: dtype float64.*astype"):
        load_data((np.zeros((2, 4)), None)).inputs_for(ids, "m")


def test_wrong_number_of_inputs():
    two = [InputSpec("a", (None, 4), "float32"), InputSpec("b", (None, 3), "float32")]
    with pytest.raises(EvaluationError, match=r"has 2 input\(s\).*Received: 1 array\(s\)"):
        load_data((np.zeros((2, 4)), None)).inputs_for(two, "m")


def test_npz_without_the_input_names(tmp_path):
    np.savez(tmp_path / "v.npz", images=np.zeros((2, 8, 8, 1)), y=np.zeros(2))
    with pytest.raises(EvaluationError, match=r"Cannot find the inputs of candidate 'm'.*"
                       r"Received: keys \['images'\]"):
        load_data(tmp_path / "v.npz").inputs_for(IMAGE, "m")


def test_labels_and_inputs_of_different_length():
    with pytest.raises(EvaluationError, match=r"one label per sample \(4 samples\). Received: y "
                       r"of shape \(3,\)"):
        load_data((np.zeros((4, 8, 8, 1)), np.zeros(3)))


def test_inputs_of_different_length():
    two = [InputSpec("a", (None, 4), "float32"), InputSpec("b", (None, 3), "float32")]
    data = load_data(((np.zeros((4, 4)), np.zeros((3, 3))), None))
    with pytest.raises(EvaluationError, match=r"same number of samples. Received: \[4, 3\]"):
        data.inputs_for(two, "m")


def test_no_samples():
    with pytest.raises(EvaluationError, match=r"at least one validation sample"):
        load_data((np.zeros((0, 8, 8, 1)), None))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(EvaluationError, match=r"No such data file"):
        load_data(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(EvaluationError, match=r"Expected an .npz file written by numpy.savez"):
        load_data(tmp_path / "bad.npz")
    np.savez(tmp_path / "only_y.npz", y=np.zeros(3))
    with pytest.raises(EvaluationError, match=r"Expected input arrays"):
        load_data(tmp_path / "only_y.npz")


def test_unaccepted_form():
    with pytest.raises(EvaluationError, match=r"Expected validation data as .*Received: a tuple "
                       r"of 3 item\(s\)"):
        load_data((np.zeros(3), np.zeros(3), np.zeros(3)))


def test_compare_checks_data_against_a_tflite_file_before_running(files):
    with pytest.raises(EvaluationError, match=r"does not fit input 'input_layer.*' shape=\(None, "
                       r"8, 8, 1\) dtype=int8, quantized from float.*candidate 'int8'"):
        compare([files / "int8.tflite"], (np.zeros((4, 28, 28, 1), "float32"), np.zeros(4)),
                memory=False)


def test_multi_input_models_take_inputs_by_name_from_npz(tmp_path):
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    to_litert(model, tmp_path / "two.tflite")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "v.npz", b=rng.random((6, 3)), a=rng.random((6, 4)), y=np.arange(6) % 2)
    report = compare({"keras": model, "lite": tmp_path / "two.tflite"}, tmp_path / "v.npz",
                     runs=3, warmup=0, memory=False)
    lite = report.candidate("lite")
    assert lite.fidelity.output_rmse < 1e-5 and lite.fidelity.argmax_agreement == 1.0
    # Positional data follows the model's input order: swapped arrays do not fit.
    with pytest.raises(EvaluationError, match=r"does not fit input 'a' shape=\(None, 4\)"):
        compare([tmp_path / "two.tflite"], ((rng.random((6, 3)), rng.random((6, 4))), None),
                memory=False)
