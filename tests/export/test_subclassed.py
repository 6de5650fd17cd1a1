"""Subclassed models export: traced at the shapes given (or those they were built with)."""

import keras
import numpy as np
import pytest

from kmot.errors import KmotError
from kmot.export import LiteRTModel, inspect, to_litert


class Net(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, activation="relu")
        self.flat = keras.layers.Flatten()
        self.head = keras.layers.Dense(10)

    def call(self, x):
        return self.head(self.flat(self.conv(x)))


def test_a_subclassed_model_exports_with_input_shapes(digits_data):
    x = digits_data[0][:32]
    with pytest.raises(KmotError, match=r"never built.*Expected input_shapes=\[\(None, "):
        to_litert(Net())
    model = Net()
    content = to_litert(model, input_shapes=[(None, 8, 8, 1)])
    np.testing.assert_allclose(LiteRTModel(content).predict(x), model(x), atol=1e-5)
    int8 = to_litert(model, quantize="int8", representative_data=x)  # built now: no shapes
    assert inspect(int8).is_quantized
    with pytest.raises(KmotError, match=r"Expected input_shapes as a list of shapes"):
        to_litert(Net(), input_shapes=[(None, 0, 8, 1)])
    functional = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(KmotError, match=r"input_shapes= is for models without symbolic"):
        to_litert(functional, input_shapes=[(None, 4)])
