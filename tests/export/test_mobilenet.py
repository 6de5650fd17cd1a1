"""MobileNetV2 (random weights) converts to a fully int8 graph."""

import keras
import numpy as np
import pytest

from kmot.export import inspect, to_litert


@pytest.mark.slow
def test_mobilenetv2_full_int8_has_no_float_compute_op():
    model = keras.applications.MobileNetV2(weights=None)
    calib = np.random.default_rng(0).uniform(-1, 1, size=(8, 224, 224, 3)).astype("float32")
    info = inspect(to_litert(model, quantize="int8", representative_data=calib))
    assert info.float_ops_between_io() == []
    counts = info.op_counts
    assert counts["QUANTIZE"] == 1 and counts["DEQUANTIZE"] == 1
    assert counts["CONV_2D"] == 35 and counts["DEPTHWISE_CONV_2D"] == 17
    assert {w.dtype for w in info.weights if not w.is_bias} == {"int8"}
