"""The digits task of kmot's benchmarks: sklearn's bundled 8x8 digits and a small CNN."""

from __future__ import annotations

import numpy as np

__all__ = ["digits", "digits_cnn"]


def digits(*, train_size: int = 1400, seed: int = 0, image_size: int = 8, channels: int = 1):
    """sklearn's 8x8 digits, scaled to [0, 1] with a channel axis, split in two.

    The split follows the benchmark protocol: shuffle with
    ``np.random.default_rng(seed).permutation``, first `train_size` images train.

    Args:
        train_size: how many images train; the rest test.
        seed: the shuffle's seed.
        image_size: a multiple of 8: the images are upscaled (each pixel
            repeated), e.g. 32 for keras.applications models, which need 32x32.
        channels: 1, or 3 (the gray image repeated) for RGB models.

    Returns:
        ``(x_train, y_train, x_test, y_test)``; x float32 of shape
        (n, image_size, image_size, channels), y int64 class ids 0-9.

    Example:
        >>> x_train, y_train, x_test, y_test = digits()
        >>> x_train.shape, x_test.shape
        ((1400, 8, 8, 1), (397, 8, 8, 1))
        >>> digits(image_size=32, channels=3)[0].shape
        (1400, 32, 32, 3)
    """
    from sklearn.datasets import load_digits

    if image_size % 8 or image_size < 8 or channels not in (1, 3):
        raise ValueError(
            "digits() upscales the 8x8 images by a whole factor to 1 or 3 channels. Expected "
            f"image_size a multiple of 8 and channels 1 or 3. Received: image_size={image_size!r}, "
            f"channels={channels!r}"
        )
    data = load_digits()
    factor = image_size // 8
    images = np.repeat(np.repeat(data.images, factor, axis=1), factor, axis=2)
    x = np.repeat((images / 16.0).astype("float32")[..., None], channels, axis=-1)
    y = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return x[:train_size], y[:train_size], x[train_size:], y[train_size:]


def digits_cnn(*, filters: tuple[int, int] = (32, 32), units: int = 64, compile: bool = True,
               name: str = "digits_cnn"):
    """The benchmark's digits CNN (logits output), compiled with Adam(1e-3).

    ``Conv2D(32, 3, same, relu) -> Conv2D(32, 3, relu) -> Flatten -> Dense(64,
    relu) -> Dense(10)``: 84,010 parameters. `filters` (the two convolutions)
    and `units` (the hidden Dense) size it, e.g. for a distillation student.

    Example:
        >>> model = digits_cnn()
        >>> model.output_shape, model.count_params()
        ((None, 10), 84010)
        >>> digits_cnn(filters=(16, 32), units=32, name="student").count_params()
        42026
    """
    import keras

    if len(filters) != 2 or not all(isinstance(f, int) and f > 0 for f in (*filters, units)):
        raise ValueError(
            "digits_cnn needs two positive int `filters` and a positive int `units`. "
            f"Received: filters={filters!r}, units={units!r}"
        )
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(filters[0], 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(filters[1], 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(units, activation="relu", name="dense1"),
            keras.layers.Dense(10, name="logits"),
        ],
        name=name,
    )
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    return model
