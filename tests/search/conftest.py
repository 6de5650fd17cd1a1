"""A tiny digits baseline and its data as files, shared by the search tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def files(tmp_path_factory, digits_data):
    """base.keras (a small CNN trained 4 epochs, ~0.93 accuracy), train.npz, val.npz."""
    import keras

    from kmot.data import digits_cnn

    folder = tmp_path_factory.mktemp("search")
    x, y, x_val, y_val = digits_data
    keras.utils.set_random_seed(0)
    model = digits_cnn(filters=(8, 8), units=16, name="tiny")
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    model.save(folder / "base.keras")
    np.savez(folder / "train.npz", x=x[:640], y=y[:640])
    np.savez(folder / "val.npz", x=x_val, y=y_val)
    return folder
