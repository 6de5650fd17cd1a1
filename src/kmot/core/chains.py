"""Carrying a weight's transforms through rewrites that move or reshape the weight.

A rewrite that replaces a layer by another computing the same thing (a Conv1D by
the 1 x k Conv2D LiteRT runs, a SeparableConv by its depthwise and pointwise
halves, a convolution with a BatchNormalization folded into it) must keep the
pruning masks, clusters and other state of the weights it moves: `rewrap`
attaches copies of the old chains, with their state, to the new layer's weights.
Where the new weight is the old one reshaped or scaled, the chain runs inside a
`Reparameterized` transform on the weight viewed as it was, so a clustering
keeps clustering the values it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from kmot.core.transform import WeightTransform, WeightView
from kmot.core.wrapper import OptimizedLayer

__all__ = ["Reparameterized", "Carried", "rewrap", "copy_transform"]


def copy_transform(transform: WeightTransform) -> WeightTransform:
    """A fresh, unbuilt transform with `transform`'s config."""
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(transform))


@keras.saving.register_keras_serializable(package="kmot")
class Reparameterized(WeightTransform):
    """Runs a chain on a weight viewed as it was before a rewrite reshaped or scaled it.

    With the new weight ``w``, the chain sees ``reshape(w / scale, shape)`` and
    its output goes back as ``reshape(out, w.shape) * scale`` (a zero scale
    leaves that slice zero).

    Args:
        chain: the transforms to run, first to last.
        shape: the weight's old shape (None: unchanged).
        scale_shape: the shape of a scale broadcast on the new weight (None: no
            scale); its value is state, set by the rewrite (see `rewrap`).
    """

    def __init__(self, chain: Sequence[WeightTransform], *, shape: Sequence[int] | None = None,
                 scale_shape: Sequence[int] | None = None):
        self.chain = list(chain)
        self.shape = tuple(shape) if shape is not None else None
        self.scale_shape = tuple(scale_shape) if scale_shape is not None else None

    def children(self) -> list[WeightTransform]:
        return list(self.chain)

    def _scale(self):
        return self.scale.value if self.scale_shape is not None else None

    def _to_old(self, value, scale):
        if scale is not None:
            value = value / ops.where(ops.equal(scale, 0), ops.ones_like(scale), scale)
        return ops.reshape(value, self.shape) if self.shape is not None else value

    def _to_new(self, value, shape, scale):
        value = ops.reshape(value, shape) if self.shape is not None else value
        return value * scale if scale is not None else value

    def build(self, weight, add_weight):
        value = self._to_old(weight.value, None)
        for i, t in enumerate(self.chain):
            def child_weight(name, shape, *, _i=i, **kwargs):
                return add_weight(f"r{_i}_{name}", shape, **kwargs)

            t.build(WeightView(weight.variable, value), child_weight)
            value = t(value, training=False)
        if self.scale_shape is not None:  # created last: see `rewrap`
            self.scale = add_weight("scale", self.scale_shape, initializer="ones")

    def _run(self, value, step):
        scale = self._scale()
        old = self._to_old(value, scale)
        for t in self.chain:
            old = step(t, old)
        return self._to_new(old, tuple(value.shape), scale)

    def __call__(self, value, *, training):
        return self._run(value, lambda t, v: t(v, training=training))

    def strip(self, value):
        return self._run(value, lambda t, v: t.strip(v))

    def on_step(self, step: int) -> None:
        for t in self.chain:
            t.on_step(step)

    def get_config(self) -> dict[str, Any]:
        return {"chain": [keras.saving.serialize_keras_object(t) for t in self.chain],
                "shape": list(self.shape) if self.shape is not None else None,
                "scale_shape": list(self.scale_shape) if self.scale_shape is not None else None}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["chain"] = [keras.saving.deserialize_keras_object(t) for t in config["chain"]]
        return cls(**config)


@dataclass(frozen=True)
class Carried:
    """A chain to carry from an old wrapper onto a new layer's weight.

    Args:
        source: the wrapper holding the chain (and its state).
        key: the weight's key in `source`.
        transforms: which of the chain's transforms (default: all); used by
            `kmot.core.strip` to keep a chain's tail.
        shape: the old shape when the new weight is the old one reshaped.
        scale: the factor, broadcast on the new weight, by which it differs
            from the old one (e.g. a folded BatchNormalization's per-channel scale).
    """

    source: OptimizedLayer
    key: str
    transforms: tuple[WeightTransform, ...] | None = None
    shape: tuple[int, ...] | None = None
    scale: np.ndarray | None = None

    def old_chain(self) -> list[WeightTransform]:
        if self.transforms is not None:
            return list(self.transforms)
        return self.source.transforms.get(self.key, [])


def rewrap(layer: keras.layers.Layer, chains: Mapping[str, Carried], **kwargs: Any) -> keras.layers.Layer:
    """Wraps built `layer` with copies of carried chains, their state copied.

    Args:
        layer: the new layer (built, holding its weights).
        chains: new weight key -> what to carry onto it; empty chains are skipped.
        **kwargs: `OptimizedLayer` arguments (``name``).

    Returns:
        An `OptimizedLayer`, or `layer` itself when there is nothing to carry.
    """
    plan = {key: c for key, c in chains.items() if c.old_chain()}
    if not plan:
        return layer
    fresh: dict[str, list[WeightTransform]] = {}
    for key, c in plan.items():
        copies = [copy_transform(t) for t in c.old_chain()]
        if c.shape is not None or c.scale is not None:
            copies = [Reparameterized(copies, shape=c.shape,
                                      scale_shape=None if c.scale is None else np.shape(c.scale))]
        fresh[key] = copies
    wrapper = OptimizedLayer(layer, fresh, **kwargs)
    wrapper.build_from_config({"layer": layer.get_build_config()})
    for key, c in plan.items():
        sources = [v for t in c.old_chain() for v in c.source.transform_variables(t)]
        targets = [v for t in fresh[key] for v in wrapper.transform_variables(t)]
        for src, dst in zip(sources, targets):
            dst.assign(src.value)
        if c.scale is not None:
            fresh[key][0].scale.assign(np.asarray(c.scale, dtype=fresh[key][0].scale.dtype))
    return wrapper
