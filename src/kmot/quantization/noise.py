"""How far int8 rounding alone moves a quantization-aware model's predictions.

A LiteRT file computes what the QAT model simulates up to rounding: where a value
falls near the middle between two steps, the integer kernels may round it the
other way. `rounding_noise_floor` measures how much that can matter for a given
model: it runs the model with every activation quantizer rounding at random
(uniform noise of half a step before rounding) and compares the argmax with the
model's own. A file's argmax agreement at or above this floor is as faithful as
rounding allows; a model far below 1.0 here is one whose decisions hang on single
steps (typically a briefly trained one with many near ties).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kmot.core.selection import walk_layers
from kmot.export.calibration import calibration_samples, input_specs
from kmot.quantization.quantizers import ActivationQuantizer

__all__ = ["rounding_noise_floor"]


def rounding_noise_floor(model: keras.Model, data: Any, *, trials: int = 3, seed: int = 0,
                         num_samples: int = 1000) -> list[float]:
    """Argmax agreement of a QAT model with itself under randomised rounding.

    Args:
        model: a model prepared with `quantize_model` (int8 activation quantizers).
        data: inputs, in any form `to_litert` takes for representative data.
        trials: how many randomised runs.
        seed: the noise's seed.
        num_samples: how many inputs to use at most.

    Returns:
        One agreement (0 to 1) per trial.

    Raises:
        QuantizationError: the model has no activation quantizer.

    Example:
        >>> floor = rounding_noise_floor(qat, x_test)          # doctest: +SKIP
        >>> parity(qat, "qat.tflite", x_test).argmax_agreement >= min(floor)  # doctest: +SKIP
    """
    from kmot.quantization.quantize import QuantizationError

    quantizers = [layer for layer in walk_layers(model) if isinstance(layer, ActivationQuantizer)]
    if not quantizers:
        raise QuantizationError(
            f"Model '{model.name}' has no activation quantizer to randomise. Expected a model "
            "from kmot.quantization.quantize_model(...). Received: a float model"
        )
    specs = input_specs(model)
    samples = calibration_samples(data, specs, num_samples=num_samples)
    inputs = [np.concatenate([s[i] for s in samples]) for i in range(len(specs))]
    x = inputs if len(inputs) > 1 else inputs[0]

    def predict():
        model.predict_function = None  # traced anew: the quantizers' rounding changed
        out = model.predict(x, verbose=0, batch_size=256)
        return np.argmax(out[0] if isinstance(out, list) else out, axis=-1)

    reference = predict()
    agreements = []
    try:
        for trial in range(trials):
            generator = keras.random.SeedGenerator(seed + trial)
            for q in quantizers:  # (not tracked: the layer's state stays as saved)
                object.__setattr__(q, "_dither", generator)
            agreements.append(float(np.mean(predict() == reference)))
    finally:
        for q in quantizers:
            object.__setattr__(q, "_dither", None)
        model.predict_function = None
    return agreements
