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

__all__ = ["WeightTransform", "AddWeight"]

#: ``add_weight(name, shape, *, initializer, dtype=None, trainable=False)``
#: creates a state variable owned by the wrapping layer.
AddWeight = Callable[..., keras.Variable]


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

    def build(self, weight: keras.Variable, add_weight: AddWeight) -> None:
        """Creates the transform's state for `weight` (called once, at build)."""

    def __call__(self, value: Any, *, training: bool) -> Any:
        """Returns the value the layer computes with (a tensor; `keras.ops` only)."""
        return value

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
