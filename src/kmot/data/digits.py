"""The digits task of kmot's benchmarks: sklearn's bundled 8x8 digits and a small CNN."""

from __future__ import annotations

import numpy as np

__all__ = ["digits", "digits_cnn"]


def digits(*, train_size: int = 1400, seed: int = 0):
    """sklearn's 8x8 digits, scaled to [0, 1] with a channel axis, split in two.

    The split follows the benchmark protocol: shuffle with
    ``np.random.default_rng(seed).permutation``, first `train_size` images train.

    Returns:
        ``(x_train, y_train, x_test, y_test)``; x float32 of shape (n, 8, 8, 1),
        y int64 class ids 0-9.

    Example:
        >>> x_train, y_train, x_test, y_test = digits()
        >>> x_train.shape, x_test.shape
        ((1400, 8, 8, 1), (397, 8, 8, 1))
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return x[:train_size], y[:train_size], x[train_size:], y[train_size:]


def digits_cnn(*, compile: bool = True):
    """The benchmark's digits CNN (logits output), compiled with Adam(1e-3).

    ``Conv2D(32, 3, same, relu) -> Conv2D(32, 3, relu) -> Flatten -> Dense(64,
    relu) -> Dense(10)``.

    Example:
        >>> model = digits_cnn()
        >>> model.output_shape
        (None, 10)
    """
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense1"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    return model
