"""Quantization-aware LSTM: fake quantizers on the ops LiteRT runs for each time step.

kmot exports recurrent layers unrolled (`kmot.export.recurrent`): each step is a
FULLY_CONNECTED for the input (bias fused), one for the recurrent state, an ADD,
LOGISTIC and TANH gates, MULs and the ADD of the cell state, all int8 with their
own scales. `QuantizedLSTM` computes the same step with a fake quantizer after
each of those ops (ranges shared by all steps: the unrolled file uses one scale
per tensor of the step), its kernel and recurrent kernel per tensor; sigmoid and
tanh at LiteRT's fixed output scales (1/256 and 1/128).

The cell state is int8 here, as in the unrolled file (LiteRT's fused integer LSTM
kernel, which keeps it in 16 bits, is not what the converter produces for Keras 3
layers). LSTMs with other activations, dropout or masking, and GRU and
Bidirectional layers, stay float.
"""

from __future__ import annotations

import keras
from keras import ops

from kmot.quantization.quantizers import ActivationQuantizer, FakeQuantTransform

__all__ = ["QuantizedLSTM", "QuantizedLSTMCell", "is_quantizable_lstm", "lstm_kernels",
           "quantized_lstm"]

_SIGMOID_RANGE = (0.0, 255 / 256)
_TANH_RANGE = (-1.0, 127 / 128)
_POINTS = ("input", "recurrent", "gates", "forget_carry", "input_candidate", "carry", "output")


def _fake_quant(kernel):
    return FakeQuantTransform(num_bits=8)(ops.convert_to_tensor(kernel), training=False)


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def is_quantizable_lstm(layer) -> bool:
    """A built plain LSTM (sigmoid gates, tanh, no dropout) `QuantizedLSTM` can rewrite."""
    if type(layer) is not keras.layers.LSTM or not layer.built:
        return False
    cell = layer.cell
    return (_activation_name(cell.recurrent_activation) == "sigmoid"
            and _activation_name(cell.activation) == "tanh"
            and cell.dropout == 0 and cell.recurrent_dropout == 0 and not layer.go_backwards
            and not layer.stateful)


def lstm_kernels(layer) -> tuple[str, ...]:
    name = layer.cell.name
    return (f"{name}/kernel", f"{name}/recurrent_kernel")


@keras.saving.register_keras_serializable(package="kmot")
class QuantizedLSTMCell(keras.layers.LSTMCell):
    """An LSTMCell whose step is fake-quantized as LiteRT's unrolled int8 ops run it."""

    def build(self, input_shape):
        super().build(input_shape)
        self.quantizers = {}
        for point in _POINTS:
            q = ActivationQuantizer(name=f"{point}_quant")
            q.build(())
            self.quantizers[point] = q
        for point, fixed in (("sigmoid", _SIGMOID_RANGE), ("tanh", _TANH_RANGE)):
            q = ActivationQuantizer(fixed_range=fixed, name=f"{point}_quant")
            q.build(())
            self.quantizers[point] = q

    def get_initial_state(self, batch_size=None):
        # zeros on the state grids, broadcast to the batch: an int8 constant and
        # BROADCAST_TO in the file (zeros made for the batch would be a float FILL)
        q = self.quantizers
        return [ops.broadcast_to(q[point](ops.zeros((1, self.units), self.compute_dtype)),
                                 (batch_size, self.units)) for point in ("output", "carry")]

    def call(self, inputs, states, training=False):
        q = self.quantizers
        h_tm1, c_tm1 = states[0], states[1]
        x = ops.matmul(inputs, _fake_quant(self.kernel))
        if self.use_bias:
            x = x + self.bias
        x = q["input"](x, training=training)
        r = q["recurrent"](ops.matmul(h_tm1, _fake_quant(self.recurrent_kernel)),
                           training=training)
        z = q["gates"](x + r, training=training)
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=1)
        gate = lambda t: q["sigmoid"](ops.sigmoid(t), training=training)
        squash = lambda t: q["tanh"](ops.tanh(t), training=training)
        i, f, o = gate(z_i), gate(z_f), gate(z_o)
        kept = q["forget_carry"](f * c_tm1, training=training)
        added = q["input_candidate"](i * squash(z_c), training=training)
        c = q["carry"](kept + added, training=training)
        h = q["output"](o * squash(c), training=training)
        return h, [h, c]


@keras.saving.register_keras_serializable(package="kmot")
class QuantizedLSTM(keras.layers.LSTM):
    """A `keras.layers.LSTM` running a `QuantizedLSTMCell` (same config and weights)."""

    simulates_deployment = True

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        config = self.cell.get_config()
        self.cell = QuantizedLSTMCell(**config)


def quantized_lstm(layer):
    """`layer` (an LSTM, or a wrapper of one) as a `QuantizedLSTM` with the same
    weights and its chains carried over (kernels fake-quantized in the cell)."""
    from kmot.core import Carried, OptimizedLayer, rewrap

    inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
    new = QuantizedLSTM.from_config(inner.get_config())
    new.build_from_config(inner.get_build_config())
    for src, dst in zip(inner.cell.weights, (new.cell.kernel, new.cell.recurrent_kernel,
                                              new.cell.bias)[:len(inner.cell.weights)]):
        dst.assign(src.value)
    chains = {}
    if isinstance(layer, OptimizedLayer):
        chains = {key: Carried(layer, key) for key in layer.transforms}
    return rewrap(new, chains)
