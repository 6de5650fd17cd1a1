"""Quantization-aware LSTM, GRU and Bidirectional: fake quantizers on the ops LiteRT
runs for each time step.

kmot exports recurrent layers unrolled (`kmot.export.recurrent`): each step is a
FULLY_CONNECTED for the input (bias fused), one for the recurrent state (a GRU's
recurrent bias fused), ADDs, LOGISTIC and TANH gates and MULs (a GRU's `1 - z` a
SUB), all int8 with their own scales. The quantized cells compute the same step
with a fake quantizer after each of those ops (ranges shared by all steps: the
unrolled file uses one scale per tensor of the step), kernels and recurrent kernels
per tensor; sigmoid and tanh at LiteRT's fixed output scales (1/256 and 1/128). A
Bidirectional layer of such layers concatenates them on one grid
(`QuantizedBidirectional`).

The state is int8 here, as in the unrolled file (LiteRT's fused integer LSTM
kernel, which keeps the cell state in 16 bits, is not what the converter produces
for Keras 3 layers). Layers with other activations, dropout, masking or state, a
GRU with `reset_after=False`, SimpleRNN and Bidirectional merges other than concat
stay float.
"""

from __future__ import annotations

import keras
from keras import ops

from kmot.quantization.quantizers import ActivationQuantizer, FakeQuantTransform

__all__ = ["QuantizedBidirectional", "QuantizedGRU", "QuantizedGRUCell", "QuantizedLSTM",
           "QuantizedLSTMCell", "is_quantizable_recurrent", "quantized_recurrent",
           "recurrent_kernels"]

_SIGMOID_RANGE = (0.0, 255 / 256)
_TANH_RANGE = (-1.0, 127 / 128)


def _fake_quant(kernel):
    return FakeQuantTransform(num_bits=8)(ops.convert_to_tensor(kernel), training=False)


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def _plain(layer) -> bool:
    cell = layer.cell
    return (_activation_name(cell.recurrent_activation) == "sigmoid"
            and _activation_name(cell.activation) == "tanh"
            and cell.dropout == 0 and cell.recurrent_dropout == 0 and not layer.stateful
            and not layer.return_state)


def is_quantizable_recurrent(layer) -> bool:
    """A built LSTM, GRU (`reset_after=True`) or concat-merged Bidirectional of them
    with sigmoid gates, tanh and no dropout or state, which `quantized_recurrent` can
    rewrite."""
    if not getattr(layer, "built", False):
        return False
    if type(layer) is keras.layers.Bidirectional:
        return layer.merge_mode == "concat" and all(
            is_quantizable_recurrent(sub) for sub in (layer.forward_layer, layer.backward_layer))
    if type(layer) is keras.layers.LSTM:
        return _plain(layer)
    if type(layer) is keras.layers.GRU:
        return _plain(layer) and layer.cell.reset_after
    return False


def recurrent_kernels(layer) -> tuple[str, ...]:
    """The weight keys of `layer`'s kernels and recurrent kernels."""
    if isinstance(layer, keras.layers.Bidirectional):
        return tuple(f"{sub.name}/{key}" for sub in (layer.forward_layer, layer.backward_layer)
                     for key in recurrent_kernels(sub))
    name = layer.cell.name
    return (f"{name}/kernel", f"{name}/recurrent_kernel")


class _QuantizedCell:
    """Quantizers named by the points of a step, plus the fixed sigmoid and tanh grids."""

    POINTS: tuple[str, ...] = ()

    def _build_quantizers(self):
        self.quantizers = {}
        for point in self.POINTS:
            q = ActivationQuantizer(name=f"{point}_quant")
            q.build(())
            self.quantizers[point] = q
        for point, fixed in (("sigmoid", _SIGMOID_RANGE), ("tanh", _TANH_RANGE)):
            q = ActivationQuantizer(fixed_range=fixed, name=f"{point}_quant")
            q.build(())
            self.quantizers[point] = q

    def _quantizer(self, point):
        if point == "output" and getattr(self, "_output_quantizer", None) is not None:
            return self._output_quantizer  # shared with another cell
        return self.quantizers[point]

    def _zeros_on(self, points, batch_size):
        # zeros on the state grids, broadcast to the batch: an int8 constant and
        # BROADCAST_TO in the file (zeros made for the batch would be a float FILL)
        return [ops.broadcast_to(self._quantizer(p)(ops.zeros((1, self.units), self.compute_dtype)),
                                 (batch_size, self.units)) for p in points]

    def _gates(self, training):
        q = self.quantizers
        return (lambda t: q["sigmoid"](ops.sigmoid(t), training=training),
                lambda t: q["tanh"](ops.tanh(t), training=training))


@keras.saving.register_keras_serializable(package="kmot")
class QuantizedLSTMCell(_QuantizedCell, keras.layers.LSTMCell):
    """An LSTMCell whose step is fake-quantized as LiteRT's unrolled int8 ops run it."""

    POINTS = ("input", "recurrent", "gates", "forget_carry", "input_candidate", "carry",
              "output")

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizers()

    def get_initial_state(self, batch_size=None):
        return self._zeros_on(("output", "carry"), batch_size)

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
        gate, squash = self._gates(training)
        i, f, o = gate(z_i), gate(z_f), gate(z_o)
        kept = q["forget_carry"](f * c_tm1, training=training)
        added = q["input_candidate"](i * squash(z_c), training=training)
        c = q["carry"](kept + added, training=training)
        h = self._quantizer("output")(o * squash(c), training=training)
        return h, [h, c]


@keras.saving.register_keras_serializable(package="kmot")
class QuantizedGRUCell(_QuantizedCell, keras.layers.GRUCell):
    """A GRUCell (`reset_after=True`) whose step is fake-quantized as LiteRT's unrolled
    int8 ops run it: the input and recurrent FULLY_CONNECTEDs, the update and reset
    ADDs, `z * h`, `1 - z`, `r * (h @ U_h)`, the candidate ADD, `(1 - z) * hh` and the
    new state's ADD."""

    POINTS = ("input", "recurrent", "update", "reset", "kept", "complement",
              "reset_recurrent", "candidate", "mixed", "output")

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizers()

    def get_initial_state(self, batch_size=None):
        return self._zeros_on(("output",), batch_size)

    def call(self, inputs, states, training=False):
        q = self.quantizers
        h_tm1 = states[0] if isinstance(states, (list, tuple)) else states
        x = ops.matmul(inputs, _fake_quant(self.kernel))
        r_all = ops.matmul(h_tm1, _fake_quant(self.recurrent_kernel))
        if self.use_bias:
            x = x + self.bias[0]
            r_all = r_all + self.bias[1]
        x_z, x_r, x_h = ops.split(q["input"](x, training=training), 3, axis=-1)
        r_z, r_r, r_h = ops.split(q["recurrent"](r_all, training=training), 3, axis=-1)
        gate, squash = self._gates(training)
        z = gate(q["update"](x_z + r_z, training=training))
        r = gate(q["reset"](x_r + r_r, training=training))
        kept = q["kept"](z * h_tm1, training=training)
        complement = q["complement"](1.0 - z, training=training)
        reset = q["reset_recurrent"](r * r_h, training=training)
        hh = squash(q["candidate"](x_h + reset, training=training))
        mixed = q["mixed"](complement * hh, training=training)
        h = self._quantizer("output")(kept + mixed, training=training)
        return h, [h]


class _QuantizedRNN:
    """A recurrent layer running its `CELL` (same config and weights)."""

    CELL: type = None
    simulates_deployment = True

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        self.cell = self.CELL(**self.cell.get_config())
        self.use_cudnn = False  # a fused kernel would skip the cell's quantizers


@keras.saving.register_keras_serializable(package="kmot")
class QuantizedLSTM(_QuantizedRNN, keras.layers.LSTM):
    """A `keras.layers.LSTM` running a `QuantizedLSTMCell` (same config and weights)."""

    CELL = QuantizedLSTMCell


@keras.saving.register_keras_serializable(package="kmot")
class QuantizedGRU(_QuantizedRNN, keras.layers.GRU):
    """A `keras.layers.GRU` running a `QuantizedGRUCell` (same config and weights)."""

    CELL = QuantizedGRUCell


@keras.saving.register_keras_serializable(package="kmot")
class QuantizedBidirectional(keras.layers.Bidirectional):
    """A concat-merged `keras.layers.Bidirectional` of quantized LSTMs or GRUs whose two
    directions write their outputs on one grid.

    LiteRT's CONCATENATION keeps one scale for its inputs and output, so the converter
    puts the forward and backward outputs (and, as the state is the output, every
    step of both) on one scale spanning both ranges; the backward cell therefore uses
    the forward cell's output quantizer.
    """

    simulates_deployment = True

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        # an alias, not tracked: the quantizer's state stays the forward cell's
        object.__setattr__(self.backward_layer.cell, "_output_quantizer",
                           self.forward_layer.cell.quantizers["output"])


_QUANTIZED = {keras.layers.LSTM: QuantizedLSTM, keras.layers.GRU: QuantizedGRU}


def _quantized_copy(inner):
    return _QUANTIZED[type(inner)].from_config(inner.get_config())


def _copy_cell_weights(old, new):
    for name in ("kernel", "recurrent_kernel", "bias"):
        source = getattr(old.cell, name, None)
        if source is not None:  # (no bias with use_bias=False)
            getattr(new.cell, name).assign(source.value)


def quantized_recurrent(layer):
    """`layer` (an LSTM, GRU or Bidirectional of them, or a wrapper of one) rewritten
    with quantized cells, the same config and weights, its chains carried over
    (kernels fake-quantized in the cells)."""
    from kmot.core import Carried, OptimizedLayer, rewrap

    inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
    if isinstance(inner, keras.layers.Bidirectional):
        new = QuantizedBidirectional(
            _quantized_copy(inner.forward_layer), merge_mode=inner.merge_mode,
            backward_layer=_quantized_copy(inner.backward_layer), name=inner.name)
        new.build_from_config(inner.get_build_config())
        for side in ("forward_layer", "backward_layer"):
            _copy_cell_weights(getattr(inner, side), getattr(new, side))
    else:
        new = _quantized_copy(inner)
        new.build_from_config(inner.get_build_config())
        _copy_cell_weights(inner, new)
    chains = {}
    if isinstance(layer, OptimizedLayer):
        chains = {key: Carried(layer, key) for key in layer.transforms}
    return rewrap(new, chains)
