"""A bias on the int32 grid LiteRT stores it on.

LiteRT's int8 CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and TRANSPOSE_CONV add
their bias as int32 in steps of the input's scale times the kernel's (per output
channel): ``round(b / (s_in * s_w))``. A float bias differs from that by up to
half a step, which moves outputs that sit near a rounding tie of the output grid
by one step; in deep nets those steps grow layer by layer into flipped decisions.
`BiasQuantTransform` puts the bias on that grid in the Keras model, so it computes
the bias the file holds.

The grid is computed from the layer's weights and its input quantizer's range
alone, all constants once a model is frozen: every converter entry point
(`kmot.export.to_litert`, ``tf.lite.TFLiteConverter.from_keras_model``) folds it
into the bias constant it quantizes, which then lies on its own grid already.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kmot.core.nested import producer
from kmot.core.transform import WeightTransform
from kmot.quantization.quantizers import ActivationQuantizer, FakeQuantTransform

__all__ = ["BiasQuantTransform"]


@keras.saving.register_keras_serializable(package="kmot")
class BiasQuantTransform(WeightTransform):
    """A layer's bias in steps of its input quantizer's scale times its kernel's.

    It finds both when its layer is placed in a graph (`bind`): the activation
    quantizer whose grid the layer's input is on, and the kernel's
    `FakeQuantTransform` (whose axis gives the per-channel scales). Where either
    is missing, or the layer is shared between grids, the bias passes as it is.
    The gradient is straight through; `strip` keeps the bias on its grid.
    """

    simulates_deployment = True  # the file holds this bias

    def __init__(self, num_bits: int = 8):
        self.num_bits = num_bits  # the activations' bits (the input's grid)
        self._source: tuple[Any, ActivationQuantizer, FakeQuantTransform] | None = None

    def bind(self, layer, inputs) -> None:
        from kmot.quantization.placement import upstream_quantizer

        first = keras.tree.flatten(inputs)[0]
        if producer(first) is None:
            return  # a shape-inference pass, not a placement
        kernel_fq = next((t for t in layer.transforms.get("kernel", ())
                          if isinstance(t, FakeQuantTransform)), None)
        quantizer = upstream_quantizer(first)
        if kernel_fq is None or quantizer is None or (
                self._source is not None and self._source[1] is not quantizer):
            self._source = None  # (a layer shared between grids: no single bias grid)
            return
        self._source = (layer, quantizer, kernel_fq)

    def __call__(self, value, *, training):
        if self._source is None:
            return value
        layer, quantizer, kernel_fq = self._source
        # the value the kernel's FakeQuant takes its grid from (this pass's, once computed)
        kernel = layer.value_before("kernel", kernel_fq, training=training)
        lo, hi = quantizer.grid()
        kernel_step = kernel_fq.bounds(kernel) / (2.0 ** (kernel_fq.num_bits - 1) - 1)
        step = ops.stop_gradient((hi - lo) / (2.0 ** self.num_bits - 1) * kernel_step)
        snapped = ops.round(value / step) * step
        return value + ops.stop_gradient(snapped - value)

    def strip(self, value):
        return self(value, training=False)  # the bias the file holds

    def get_config(self) -> dict[str, Any]:
        return {"num_bits": self.num_bits}

