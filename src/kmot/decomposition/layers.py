"""Building the plain Keras layers that hold a factored kernel."""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np

__all__ = ["unsupported", "config_of", "built", "input_shape", "output_shape", "positions"]

#: Options every layer takes (`keras.layers.Layer.__init__`) besides its own.
_LAYER_KEYS = ("name", "dtype", "trainable")
#: Dropped from every factor: a kernel's regularizer or constraint means nothing on
#: its factors (a max-norm on one factor does not bound the product).
_KERNEL_ONLY = ("kernel_regularizer", "kernel_constraint")


def unsupported(layer: keras.layers.Layer, base: type) -> str | None:
    """Why `layer` (an instance of `base` or a subclass) cannot be factored, or None."""
    if type(layer).call is not base.call:
        return f"{type(layer).__name__} has its own call(): its factors would compute something else"
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled on it: factor the model before enabling LoRA"
    if getattr(layer, "quantization_mode", None):
        return f"quantized by Keras ({layer.quantization_mode}): factor the float model"
    return None


def config_of(layer: keras.layers.Layer, base: type, **overrides) -> dict:
    """`layer`'s config as `base` takes it (a subclass's extra keys dropped), with
    kernel regularizers and constraints removed and `overrides` applied."""
    accepted = set(inspect.signature(base.__init__).parameters) | set(_LAYER_KEYS)
    config = {k: v for k, v in layer.get_config().items()
              if k in accepted and k not in _KERNEL_ONLY}
    config.update(overrides)
    return config


def built(base: type, config: dict, shape: tuple, weights: list[np.ndarray], dtype) -> keras.layers.Layer:
    """A `base` layer from `config`, built for inputs of `shape`, holding `weights`."""
    layer = base.from_config(config)
    layer.build(shape)
    layer.set_weights([np.asarray(w, dtype) for w in weights])
    return layer


def _first(tensors):
    return tensors[0] if isinstance(tensors, (list, tuple)) else tensors


def input_shape(layer: keras.layers.Layer) -> tuple:
    return tuple(_first(layer.input).shape)


def output_shape(layer: keras.layers.Layer) -> tuple:
    return tuple(_first(layer.output).shape)


def positions(shape: tuple, data_format: str = "channels_last") -> int:
    """How many positions a kernel is applied at in a tensor of `shape` (unknown
    sizes count as 1): every axis but the batch and the channels."""
    inner = shape[1:-1] if data_format == "channels_last" else shape[2:]
    return int(math.prod(d for d in inner if d)) if len(shape) > 2 else 1
