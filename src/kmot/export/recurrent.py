"""Export-time unrolling of recurrent layers, so LiteRT runs them with builtin ops.

Keras 3's LSTM, GRU and SimpleRNN loop over time with a TensorList whose element
shape depends on the batch size, which the LiteRT converter refuses ("requires
element_shape to be static") unless TensorFlow ops (Flex) are allowed, and the
LiteRT interpreter has no Flex delegate. With a known number of time steps the
same layer unrolled (``unroll=True``) computes the same values with one
FULLY_CONNECTED, LOGISTIC, TANH, MUL and ADD per step: builtin ops, in float,
dynamic-range and full int8, the batch still dynamic. kmot traces the model for
export under `unrolled_recurrences(model)`; the model is unchanged afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import keras

from kmot.core.selection import walk_layers

__all__ = ["unrolled_recurrences", "recurrent_layers"]

#: Beyond this many time steps an unrolled graph grows large: said once, still done.
LONG_SEQUENCE = 256


def recurrent_layers(model: keras.Model) -> list[keras.layers.RNN]:
    """Every `keras.layers.RNN` in the model, those inside Bidirectional included."""
    found = []
    for layer in walk_layers(model):
        inner = getattr(layer, "layer", None)
        if isinstance(layer, keras.layers.Bidirectional):
            found += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, keras.layers.RNN):
            found.append(layer)
        elif isinstance(inner, keras.layers.RNN):  # a kmot wrapper around one
            found.append(inner)
    return found


def _timesteps(layer: keras.layers.RNN) -> int | None:
    shape = getattr(layer, "_build_shapes_dict", None) or {}
    dims = next(iter(shape.values()), None) if shape else None
    if dims is None:
        try:
            dims = layer.input.shape
        except (AttributeError, ValueError):
            return None
    dims = tuple(dims)
    return dims[1] if len(dims) >= 3 and isinstance(dims[1], int) else None


@contextlib.contextmanager
def unrolled_recurrences(model: keras.Model) -> Iterator[list[str]]:
    """While active, recurrent layers with a known number of time steps unroll.

    Yields:
        The names of the layers left looping (time steps unknown): their export
        then needs a fixed sequence length, which the caller's error names.
    """
    changed, looping, long = [], [], []
    for layer in recurrent_layers(model):
        steps = _timesteps(layer)
        if steps is None:
            looping.append(layer.name)
            continue
        if not layer.unroll:
            changed.append(layer)
            if steps > LONG_SEQUENCE:
                long.append(f"{layer.name} ({steps} steps)")
    if long:
        warnings.warn(f"Unrolling {', '.join(long)} for LiteRT: the file holds one set of ops "
                      "per step, so it grows with the sequence length.", stacklevel=3)
    try:
        for layer in changed:
            layer.unroll = True
        yield looping
    finally:
        for layer in changed:
            layer.unroll = False
