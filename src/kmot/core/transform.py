"""The `WeightTransform` protocol: one step in a weight's transform chain.

A transform maps a weight's value to the value the layer computes with, e.g. a
pruning mask (``w * mask``), a clustering (``centroids[indices]``) or a fake
quantization. Transforms compose: `OptimizedLayer` applies a chain
``mask -> cluster -> fake-quant`` to one weight, which is how collaborative
optimization works without a subsystem of its own.

A transform keeps its state (masks, centroids, ranges) in variables it creates in
`build` through the `add_weight` function it is handed; these variables belong to
the wrapping layer, so they train, save and load with the model.

Training-time code here uses `keras.ops` only, so it runs on every Keras backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

__all__ = ["WeightTransform", "AddWeight", "WeightView", "flatten_chain"]

#: ``add_weight(name, shape, *, initializer, dtype=None, trainable=False)``
#: creates a state variable owned by the wrapping layer.
AddWeight = Callable[..., keras.Variable]


class WeightView:
    """What a transform's `build` sees: a weight as the chain before it leaves it.

    It has the variable's ``shape``, ``dtype``, ``path`` and ``name``, and the
    *value* of the chain so far: a clustering built after a pruning mask sees the
    zeros, a fake quantization after a clustering sees the shared values.

    Args:
        variable: the layer's weight.
        value: the output of the transforms ahead in the chain (a tensor).
    """

    def __init__(self, variable: keras.Variable, value: Any):
        self.variable = variable
        self.value = value

    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def dtype(self):
        return self.variable.dtype

    @property
    def path(self) -> str:
        return self.variable.path

    @property
    def name(self) -> str:
        return self.variable.name

    def numpy(self):
        import numpy as np

        return np.asarray(keras.ops.convert_to_numpy(self.value))

    def __repr__(self) -> str:
        return f"WeightView({self.path}, shape={self.shape})"


class WeightTransform:
    """Base class of weight transforms; subclasses override what they need.

    Subclasses register with ``@keras.saving.register_keras_serializable`` and
    implement `get_config` so that wrapped models save and load as ``.keras``.

    Example:
        >>> from keras import ops
        >>> @keras.saving.register_keras_serializable(package="example")
        ... class Scale(WeightTransform):
        ...     def __init__(self, factor=0.5):
        ...         self.factor = factor
        ...     def __call__(self, value, *, training):
        ...         return ops.multiply(value, self.factor)
        ...     def get_config(self):
        ...         return {"factor": self.factor}
    """

    #: True for transforms that simulate what the deployment does itself (fake
    #: quantization): export hands them to the converter, which implements them,
    #: instead of baking them into the weights first.
    simulates_deployment: bool = False

    def build(self, weight: WeightView, add_weight: AddWeight) -> None:
        """Creates the transform's state for `weight` (called once, at build).

        `weight` shows the value the transforms ahead in the chain produce
        (``weight.numpy()``), with the variable's shape and dtype.
        """

    def __call__(self, value: Any, *, training: bool) -> Any:
        """Returns the value the layer computes with (a tensor; `keras.ops` only)."""
        return value

    def children(self) -> list[WeightTransform]:
        """Transforms this one runs inside it (see `kmot.core.Reparameterized`)."""
        return []

    def bind(self, layer: keras.layers.Layer, inputs: Any) -> None:
        """Called each time the wrapping `OptimizedLayer` (`layer`) is placed in a
        graph, with its symbolic `inputs`: for a transform whose value depends on
        where its layer sits, e.g. the grid its input is on. A model loaded or cloned
        places its layers again, so what a transform finds here is never saved."""

    def on_step(self, step: int) -> None:
        """Updates the state at training step `step` (called eagerly by callbacks)."""

    def strip(self, value: Any) -> Any:
        """Returns the final value of the weight once the wrapper is removed.

        Defaults to the inference-time transform. Transforms that only simulate
        something the deployment does itself (fake quantization) return `value`.
        """
        return self(value, training=False)

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WeightTransform:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def flatten_chain(chain) -> list[WeightTransform]:
    """Every transform of a chain, those running inside others (`children`) included."""
    out = []
    for t in chain:
        out.append(t)
        out.extend(flatten_chain(t.children()))
    return out
