"""`OptimizedLayer`: the one wrapper behind every kmot technique.

It runs its inner layer through `Layer.stateless_call` with some weights replaced
by the output of their transform chains, so any Keras 3 layer (built-in or custom)
can be pruned, clustered or fake-quantized without per-layer forward code, on
every backend, with gradients flowing through the transforms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kmot.core.transform import WeightTransform, WeightView, flatten_chain
from kmot.errors import TransformError

__all__ = ["OptimizedLayer", "weight_key", "weight_keys"]


def _readable(variable: keras.Variable):
    """`variable`'s value as a tensor every op takes. On TensorFlow a copy (ops on a
    tf.Variable lack .ndim); torch's value is a tensor already, and copying every
    kernel at every step cost a pass over it forward and backward."""
    if keras.backend.backend() == "torch":
        return variable.value
    return ops.copy(variable.value)


def weight_key(layer: keras.layers.Layer, variable: keras.Variable) -> str:
    """The name of `variable` relative to `layer`: ``"kernel"``, ``"sub/kernel"``.

    Stable across cloning, wrapping and reloading, unlike ``variable.path``,
    which carries the names of the enclosing layers.
    """
    parts = variable.path.split("/")
    if layer.name in parts[:-1]:
        parts = parts[parts.index(layer.name) + 1 :]
    else:
        # built outside its parent's name scope (a cloned Bidirectional's LSTMs):
        # the sublayer holding it names it
        return _sublayer_key(layer, variable) or parts[-1]
    return "/".join(parts)


def _sublayer_key(layer, variable) -> str | None:
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        if any(v is variable for v in sub.weights):
            return f"{sub.name}/{weight_key(sub, variable)}"
    return None


def weight_keys(layer: keras.layers.Layer) -> list[str]:
    """The keys (see `weight_key`) of all of `layer`'s weights, in order."""
    return [weight_key(layer, v) for v in layer.weights]


class _ChainIndex:
    """Chains by variable identity, kept out of Keras/TF attribute tracking
    (a tracked dict with int keys cannot be exported to a SavedModel)."""

    def __init__(self):
        self.by_var: dict[int, list[WeightTransform]] = {}
        self.variables: dict[int, list] = {}
        #: During `call`: each chain's inputs, by (id(variable), index in its chain).
        self.this_pass: dict[tuple[int, int], Any] | None = None


def _variable_name(key: str, index: int, name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{key}_t{index}_{name}")


@keras.saving.register_keras_serializable(package="kmot")
class OptimizedLayer(keras.layers.Wrapper):
    """Wraps a layer and applies a chain of `WeightTransform`s to chosen weights.

    Args:
        layer: the layer to wrap (built or not).
        transforms: maps a weight key (``"kernel"``, ``"depthwise_kernel"``, or
            ``"sub/kernel"`` for a sublayer's weight; see `weight_keys`) to the
            transforms applied to it, first to last.
        **kwargs: base layer arguments (``name``, ...).

    Example:
        >>> layer = OptimizedLayer(keras.layers.Dense(4), {"kernel": []})
        >>> y = layer(np.ones((2, 3), "float32"))
        >>> tuple(y.shape)
        (2, 4)
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        transforms: Mapping[str, Sequence[WeightTransform]],
        **kwargs: Any,
    ):
        kwargs.setdefault("name", f"{layer.name}_opt")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        if not isinstance(transforms, Mapping):
            raise TransformError(
                "`transforms` must map weight names to lists of WeightTransform, "
                "e.g. {'kernel': [transform]}. "
                f"Received: transforms={transforms!r}"
            )
        self._chains: dict[str, list[WeightTransform]] = {}
        for key, chain in transforms.items():
            chain = list(chain)
            for t in chain:
                if not isinstance(t, WeightTransform):
                    raise TransformError(
                        f"Every transform of weight '{key}' must be a "
                        "kmot.core.WeightTransform instance. "
                        f"Received: {t!r} (type {type(t).__name__})"
                    )
            self._chains[key] = chain
        self.supports_masking = getattr(layer, "supports_masking", False)
        self._index = _ChainIndex()
        if layer.built:  # ready at once: its transforms see the layer's weights
            self.build_from_config({"layer": None})

    # ------------------------------------------------------------------ build
    @property
    def transforms(self) -> dict[str, list[WeightTransform]]:
        """The transform chains, by weight key (a copy; edit with `add_transform`)."""
        return {k: list(v) for k, v in self._chains.items()}

    def build(self, input_shape=None):
        if self.built:
            return
        if not self.layer.built:
            self.layer.build(input_shape)
        self._build_transforms()
        self.built = True

    def get_build_config(self):
        return {"layer": self.layer.get_build_config()}

    def build_from_config(self, config):
        if self.built:
            return
        if not self.layer.built:
            self.layer.build_from_config(config["layer"])
        self._build_transforms()
        self.built = True

    def _variables_by_key(self) -> dict[str, keras.Variable]:
        return {weight_key(self.layer, v): v for v in self.layer.weights}

    def _build_transforms(self) -> None:
        variables = self._variables_by_key()
        unknown = [k for k in self._chains if k not in variables]
        if unknown:
            raise TransformError(
                f"Layer '{self.layer.name}' ({type(self.layer).__name__}) has no "
                f"weight named {unknown[0]!r}. Expected one of {sorted(variables)}. "
                f"Received: transforms for {list(self._chains)}"
            )
        self._index.by_var = {}
        for key, chain in self._chains.items():
            value = ops.copy(variables[key].value)
            for index, t in enumerate(chain):
                value = self._build_one(key, index, t, variables[key], value)
            self._index.by_var[id(variables[key])] = chain

    def _build_one(self, key, index, transform, variable, value):
        """Builds `transform` on the value the chain ahead produces; returns its output."""
        created = self._index.variables.setdefault(id(transform), [])

        def add_weight(name, shape, *, initializer="zeros", dtype=None, trainable=False):
            var = self.add_weight(
                name=_variable_name(key, index, name),
                shape=tuple(shape),
                initializer=initializer,
                dtype=dtype or variable.dtype,
                trainable=trainable,
            )
            created.append(var)
            return var

        transform.build(WeightView(variable, value), add_weight)
        return transform(value, training=False)

    def transform_variables(self, transform: WeightTransform) -> list[keras.Variable]:
        """The state variables `transform` created in this wrapper, in creation order."""
        return list(self._index.variables.get(id(transform), []))

    def add_transform(self, key: str, transform: WeightTransform) -> None:
        """Appends `transform` to the chain of weight `key` (building it if needed)."""
        if not isinstance(transform, WeightTransform):
            raise TransformError(
                "`transform` must be a kmot.core.WeightTransform instance. "
                f"Received: {transform!r}"
            )
        chain = self._chains.setdefault(key, [])
        chain.append(transform)
        if self.built:
            variables = self._variables_by_key()
            if key not in variables:
                chain.pop()
                raise TransformError(
                    f"Layer '{self.layer.name}' has no weight named {key!r}. "
                    f"Expected one of {sorted(variables)}. Received: key={key!r}"
                )
            value = ops.copy(variables[key].value)
            for t in chain[:-1]:
                value = t(value, training=False)
            self._build_one(key, len(chain) - 1, transform, variables[key], value)
            self._index.by_var[id(variables[key])] = chain

    # ------------------------------------------------------------------- call
    def transformed_value(self, variable: keras.Variable, training: bool = False):
        """The value `variable` takes in the forward pass (its chain applied)."""
        chain = self._index.by_var.get(id(variable))
        if not chain:
            return variable.value
        value = _readable(variable)
        this_pass = self._index.this_pass
        for index, t in enumerate(chain):
            if this_pass is not None:
                this_pass[(id(variable), index)] = value
            value = t(value, training=training)
        return value

    def value_before(self, key: str, transform: WeightTransform, training: bool = False):
        """The value weight `key`'s chain hands `transform` (one of its own): this
        forward pass's, where `call` has computed it already (a transform of one
        weight reading another's, like a bias grid reading its kernel's)."""
        variable = self._variables_by_key()[key]
        chain = self._index.by_var.get(id(variable), [])
        index = next(i for i, t in enumerate(chain) if t is transform)
        computed = (self._index.this_pass or {}).get((id(variable), index))
        if computed is not None:
            return computed
        value = _readable(variable)
        for t in chain[:index]:
            value = t(value, training=training)
        return value

    def call(self, inputs, *args, training=None, **kwargs):
        layer = self.layer
        if getattr(layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        train = bool(training)
        self._index.this_pass = {}
        try:
            trainable = [self.transformed_value(v, train) for v in layer.trainable_variables]
            frozen_vars = layer.non_trainable_variables
            frozen = [self.transformed_value(v, train) for v in frozen_vars]
        finally:
            self._index.this_pass = None
        outputs, updated = layer.stateless_call(trainable, frozen, inputs, *args, **kwargs)
        # Carry state updates (e.g. BatchNormalization statistics) back.
        for var, before, after in zip(frozen_vars, frozen, updated):
            if after is not before and id(var) not in self._index.by_var:
                var.assign(after)
        return outputs

    def compute_output_spec(self, inputs, *args, training=None, **kwargs):
        # Transforms never change shapes: the inner layer knows its output.
        if keras.utils.is_keras_tensor(keras.tree.flatten(inputs)[0]):  # placed in a graph
            for chain in self._chains.values():
                for t in flatten_chain(chain):
                    t.bind(self, inputs)
        if getattr(self.layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        return self.layer.compute_output_spec(inputs, *args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    # ------------------------------------------------------------------ strip
    def on_step(self, step: int) -> None:
        """Forwards a training step to every transform (see `WeightTransform.on_step`)."""
        for chain in self._chains.values():
            for t in chain:
                t.on_step(step)

    def stripped_weights(self, keep=lambda transform: False) -> list[np.ndarray]:
        """The inner layer's weights with their chains' `strip` applied.

        Args:
            keep: predicate on transforms to leave out of the stripping (they stay
                for a later wrapper to re-attach).

        Returns:
            Arrays in the order of ``self.layer.weights``.
        """
        out = []
        for v in self.layer.weights:
            value = ops.copy(v.value)
            for t in self._index.by_var.get(id(v), []):
                if not keep(t):
                    value = t.strip(value)
            out.append(np.asarray(ops.convert_to_numpy(value)).astype(v.dtype))
        return out

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config["transforms"] = {
            key: [keras.saving.serialize_keras_object(t) for t in chain]
            for key, chain in self._chains.items()
        }
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects
        )
        transforms = {
            key: [
                keras.saving.deserialize_keras_object(t, custom_objects=custom_objects)
                for t in chain
            ]
            for key, chain in config.pop("transforms").items()
        }
        return cls(layer, transforms, **config)
