"""Strip wrappers and read the weights layers compute with (see `graph` for copies)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from kmot.core.chains import Carried, rewrap
from kmot.core.graph import clone_layer, clone_model
from kmot.core.selection import walk_layers
from kmot.core.transform import flatten_chain
from kmot.core.wrapper import OptimizedLayer

__all__ = ["strip", "find_wrappers", "effective_weights", "simulations"]


def simulations(model: keras.Model) -> frozenset[str]:
    """What `model` simulates of its deployment: ``"activations"`` when a layer
    does (activation fake quantizers), ``"weights"`` when a weight transform does
    (weight fake quantization). See `WeightTransform.simulates_deployment`."""
    found = set()
    for layer in walk_layers(model):
        if getattr(layer, "simulates_deployment", False):
            found.add("activations")
        if isinstance(layer, OptimizedLayer) and any(
                t.simulates_deployment for chain in layer.transforms.values()
                for t in flatten_chain(chain)):
            found.add("weights")
    return frozenset(found)


def effective_weights(model: keras.Model, select: Callable[[keras.layers.Layer], list]):
    """Yields ``(layer, key, array)`` for the weights `select(layer)` returns, as
    the layer computes with them (transforms applied for wrapped layers)."""
    import numpy as np

    from kmot.core.wrapper import weight_key

    for layer in walk_layers(model):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        for v in select(inner):
            value = layer.transformed_value(v) if isinstance(layer, OptimizedLayer) else v.value
            yield inner, weight_key(inner, v), np.asarray(keras.ops.convert_to_numpy(value))


def find_wrappers(model: keras.Model) -> list[OptimizedLayer]:
    """Every `OptimizedLayer` in `model`, nested models included."""
    return [layer for layer in walk_layers(model) if isinstance(layer, OptimizedLayer)]


def strip(
    model: keras.Model,
    *,
    wrappers: Callable[[OptimizedLayer], bool] | None = None,
    transforms: Callable[[Any], bool] | None = None,
    through: Callable[[Any], bool] | None = None,
) -> keras.Model:
    """Bakes transforms into the weights and removes the wrappers they leave empty.

    Each stripped transform's `strip` result becomes the weight's value (e.g. a
    pruned kernel with exact zeros). Stripping a model with no wrapper returns a
    plain copy, so stripping twice is harmless.

    Args:
        model: a Sequential or Functional model.
        wrappers: predicate choosing which wrappers to strip (default: all).
        transforms: predicate choosing which transforms to strip (default: all).
            The transforms kept must end each chain (e.g. strip clustering, keep
            the fake quantization after it); a wrapper keeps them, with their state.
        through: instead of `transforms`, bake each chain up to and including
            its last transform matching this predicate (nested ones count: see
            `flatten_chain`), and keep the rest: ``strip_pruning`` of
            prune -> cluster bakes the mask and keeps the clustering.

    Returns:
        A new model of the original architecture.

    Raises:
        TransformError: a kept transform comes before a stripped one.

    Example:
        >>> plain = strip(model)  # doctest: +SKIP
    """
    from kmot.errors import TransformError

    choose = wrappers or (lambda w: True)
    baked = transforms or (lambda t: True)

    def flags_of(chain):
        if through is None:
            return [bool(baked(t)) for t in chain]
        hits = [i for i, t in enumerate(chain) if any(through(u) for u in flatten_chain([t]))]
        last = hits[-1] if hits else -1
        return [i <= last for i in range(len(chain))]

    def replace(layer):
        if not isinstance(layer, OptimizedLayer) or not choose(layer):
            return None
        kept = {}
        for key, chain in layer.transforms.items():
            flags = flags_of(chain)
            if flags != sorted(flags, reverse=True):
                raise TransformError(
                    f"Layer '{layer.layer.name}': the transforms kept must come after the ones "
                    f"stripped. Received: chain {chain} for weight '{key}'"
                )
            if not all(flags):
                kept[key] = [t for t, f in zip(chain, flags) if not f]
        kept_ids = {id(t) for chain in kept.values() for t in chain}
        inner = clone_layer(layer.layer)
        inner.set_weights(layer.stripped_weights(keep=lambda t: id(t) in kept_ids))
        return rewrap(inner, {key: Carried(layer, key, tuple(chain)) for key, chain in kept.items()},
                      name=layer.name)

    return clone_model(model, replace=replace)
