"""Export-time LSTMs as LiteRT's fused UNIDIRECTIONAL_SEQUENCE_LSTM op.

The converter replaces a function it recognises as a Keras LSTM (attribute
``api_implements="lstm_<id>"``, arguments ``inputs, h0, c0, kernel, recurrent_kernel,
bias``, five results) by one fused op, when the batch size is fixed. Keras 3's LSTM
emits no such function, so under `fused_lstms(layers)` each given layer computes its
step loop through one: the converter fuses it (and, where it cannot, keeps the body,
an ordinary unrolled LSTM, so the values are right either way).

The fused op keeps its state in variable tensors that persist between invocations:
a caller running independent sequences resets them before each
(``interpreter.reset_all_variables()``), as `kmot.export.LiteRTModel` does.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import keras

from kmot.core.selection import walk_layers

__all__ = ["fusable_lstms", "fused_lstms", "why_not_fusable"]

#: The activations LiteRT's fused LSTM computes (gates sigmoid, cell tanh).
_ACTIVATIONS = ("tanh", "sigmoid")


def _name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def why_not_fusable(layer: keras.layers.Layer) -> str | None:
    """None when LiteRT's fused op computes `layer` exactly, else the reason."""
    if type(layer) is not keras.layers.LSTM or type(layer.cell) is not keras.layers.LSTMCell:
        return f"{type(layer).__name__} is not a plain keras.layers.LSTM"
    cell = layer.cell
    if (_name(cell.activation), _name(cell.recurrent_activation)) != _ACTIVATIONS:
        return (f"activation={_name(cell.activation)}, recurrent_activation="
                f"{_name(cell.recurrent_activation)} (the fused op computes tanh, sigmoid)")
    if layer.stateful:
        return "stateful=True"
    if layer.return_state:
        return "return_state=True (the fused op gives the outputs only)"
    return None


def _plain_lstms(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.Bidirectional):
            found += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, keras.layers.LSTM):
            found.append(layer)
    return found


def fusable_lstms(model: keras.Model) -> tuple[list[keras.layers.Layer], dict[str, str]]:
    """The model's LSTMs the fused op can compute, and the others with the reason."""
    fusable, other = [], {}
    for layer in _plain_lstms(model):
        reason = why_not_fusable(layer)
        if reason is None:
            fusable.append(layer)
        else:
            other[layer.name] = reason
    return fusable, other


def _lstm_function(tf, go_backwards: bool):
    """A Keras-LSTM function the converter recognises; its body is the same LSTM."""
    attributes = {"api_implements": f"lstm_{uuid.uuid4()}", "api_preferred_device": "CPU",
                  "time_major": False, "go_backwards": bool(go_backwards)}

    @tf.function(experimental_attributes=attributes, autograph=False)
    def standard_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        h, c = init_h, init_c
        steps = range(inputs.shape[1])
        outputs = []
        for t in reversed(steps) if go_backwards else steps:
            z = tf.matmul(inputs[:, t], kernel) + tf.matmul(h, recurrent_kernel) + bias
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            outputs.append(h)
        # last output, the sequence, the two states, and Keras 2's runtime marker
        return h, tf.stack(outputs, axis=1), h, c, tf.constant(0.0)

    return standard_lstm


@contextlib.contextmanager
def fused_lstms(layers: list[keras.layers.Layer]) -> Iterator[None]:
    """While active, `layers` (from `fusable_lstms`) trace through the converter's
    Keras-LSTM function whenever their input has a fixed batch and length and no
    mask; the layers are unchanged afterwards."""
    import tensorflow as tf

    def loop(layer, function, original):
        def inner_loop(sequences, initial_state, mask, training=False):
            if mask is not None or None in tuple(sequences.shape)[:2]:
                return original(sequences, initial_state, mask, training=training)
            cell = layer.cell
            # tensors, not variables: a variable handle as an argument crashes the converter
            bias = (tf.convert_to_tensor(cell.bias) if cell.use_bias
                    else tf.zeros([4 * cell.units], sequences.dtype))
            last, outputs, h, c, _ = function(
                sequences, initial_state[0], initial_state[1], tf.convert_to_tensor(cell.kernel),
                tf.convert_to_tensor(cell.recurrent_kernel), bias)
            return last, outputs, [h, c]

        return inner_loop

    patched = []
    try:
        for layer in layers:
            layer.inner_loop = loop(layer, _lstm_function(tf, layer.go_backwards),
                                    layer.inner_loop)
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.inner_loop
