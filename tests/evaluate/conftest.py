"""Fixtures for the evaluation harness: real LiteRT files of a trained digits model."""

import numpy as np
import pytest

from kmot.evaluate import compare
from kmot.export import to_litert


@pytest.fixture(scope="session")
def val(digits_data):
    """The first 120 digits test images and labels."""
    _, _, x_test, y_test = digits_data
    return x_test[:120], y_test[:120]


@pytest.fixture(scope="session")
def files(tmp_path_factory, trained_conv_bn_dense, digits_data, val):
    """float32 and full-int8 (int8 I/O) LiteRT files, the .keras file, and val.npz."""
    folder = tmp_path_factory.mktemp("evaluate")
    model = trained_conv_bn_dense
    to_litert(model, folder / "float.tflite")
    to_litert(model, folder / "int8.tflite", quantize="int8",
              representative_data=digits_data[0][:200],
              inference_input_type="int8", inference_output_type="int8")
    model.save(folder / "model.keras")
    np.savez(folder / "val.npz", x=val[0], y=val[1])
    return folder


@pytest.fixture(scope="session")
def report(files, val):
    """A report of float (baseline) vs int8, without the memory measurement."""
    return compare({"float": files / "float.tflite", "int8": files / "int8.tflite"}, val,
                   baseline="float", metrics=("accuracy", "top3"), runs=30, warmup=3,
                   memory=False)
