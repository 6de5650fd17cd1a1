"""Model surgery: clone Sequential and Functional models, wrapping or replacing layers.

Every kmot technique is a rewrite: it clones the user's model (which stays
untouched, so the baseline remains available), hands each selected layer's copy to
a `replace` function (which usually wraps it in an `OptimizedLayer`) and copies
all weights across. Multi-input and multi-output graphs, shared layers (cloned
once, still shared) and models nested inside models are supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from kmot.core.selection import LayerSelector, make_predicate, walk_layers
from kmot.core.wrapper import OptimizedLayer
from kmot.errors import UnsupportedModelError

__all__ = ["clone_model", "clone_layer", "strip", "is_graph_model", "find_wrappers",
           "effective_weights"]

Replace = Callable[[keras.layers.Layer], "keras.layers.Layer | None"]


def is_graph_model(model: Any) -> bool:
    """True for Sequential and Functional models (whose layer graph is known)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def _check_model(model: Any) -> None:
    if is_graph_model(model):
        if not model.built or not model.inputs:
            raise UnsupportedModelError(
                f"Model '{model.name}' is not built: its input shape is unknown. "
                "Expected a model built with `keras.Input(...)` (or call "
                "`model.build(input_shape)` first). Received: a model with no inputs"
            )
        return
    if isinstance(model, keras.Model):
        raise UnsupportedModelError(
            "kmot rewrites Sequential and Functional models, whose layer graph it "
            f"can see. Received: model '{model.name}' of subclassed type "
            f"{type(model).__name__}. Rebuild it with the Functional API "
            "(keras.Model(inputs, outputs)), or apply kmot to its layers inside "
            "your class (e.g. wrap them with kmot.core.OptimizedLayer)."
        )
    raise UnsupportedModelError(
        f"Expected a keras.Model. Received: {model!r} (type {type(model).__name__})"
    )


def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new, independent copy of `layer`, built and holding the same weights."""
    try:
        new = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer)
        )
    except Exception:  # noqa: BLE001 - e.g. an unregistered custom class
        new = None
    try:
        if new is None:  # what keras.models.clone_model does by default
            new = type(layer).from_config(layer.get_config())
    except Exception as err:  # noqa: BLE001 - any failure means "not clonable"
        raise UnsupportedModelError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be cloned from "
            "its config. Expected a layer whose `get_config()` / `from_config()` "
            "round-trip (custom layers: implement get_config and register the "
            "class with @keras.saving.register_keras_serializable). "
            f"Received: {type(err).__name__}: {err}"
        ) from err
    if layer.built and not new.built:
        build_config = layer.get_build_config()
        if build_config:
            new.build_from_config(build_config)
    if layer.built and new.built:
        _copy_weights(layer, new)
    return new


def _copy_weights(src: keras.layers.Layer, dst: keras.layers.Layer) -> None:
    values = src.get_weights()
    if len(values) != len(dst.weights):
        raise UnsupportedModelError(
            f"Layer '{src.name}' ({type(src).__name__}) rebuilt from its config "
            f"has {len(dst.weights)} weights instead of {len(values)}. Expected a "
            "layer whose build() creates the same weights every time. "
            f"Received: {[w.path for w in src.weights]}"
        )
    dst.set_weights(values)


def clone_model(
    model: keras.Model,
    *,
    replace: Replace | None = None,
    layers: LayerSelector = None,
    call_function: Callable[..., Any] | None = None,
) -> keras.Model:
    """Clones a Sequential or Functional model, optionally replacing layers.

    The clone holds copies of all weights; the input model is left untouched.

    Args:
        model: a built Sequential or Functional model (nested models allowed).
        replace: ``fn(layer_copy) -> new_layer | None`` called for each selected
            leaf layer with an independent, built copy holding the original's
            weights; return a replacement (e.g. the copy wrapped in an
            `OptimizedLayer`) or None to keep the copy.
        layers: which layers `replace` sees (see `kmot.core.make_predicate`).
        call_function: ``fn(layer, *args, **kwargs)`` calling each new layer in a
            Functional graph, for node-level rewrites (see `keras.models.clone_model`).

    Returns:
        A new model with the same inputs, outputs and names.

    Raises:
        UnsupportedModelError: a subclassed or unbuilt model, or a layer that
            cannot be cloned from its config.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> copy = clone_model(model)
        >>> copy is model
        False
    """
    _check_model(model)
    selected = make_predicate(layers)
    pending: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_function(layer):
        if isinstance(layer, keras.Model) and not is_graph_model(layer):
            # A subclassed model nested in a graph: cloned whole, never entered.
            return clone_layer(layer)
        new = clone_layer(layer)
        if layer.built and not new.built:
            pending.append((layer, new))
        if replace is not None and selected(layer):
            replacement = replace(new)
            if replacement is not None:
                return replacement
        return new

    kwargs = {}
    if call_function is not None:
        kwargs["call_function"] = call_function
    new_model = keras.models.clone_model(
        model, clone_function=clone_function, recursive=True, **kwargs
    )
    for src, dst in pending:  # layers that could only be built inside the graph
        _copy_weights(src, dst)
    return new_model


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

    def replace(layer):
        if not isinstance(layer, OptimizedLayer) or not choose(layer):
            return None
        kept = {}
        for key, chain in layer.transforms.items():
            flags = [baked(t) for t in chain]
            if flags != sorted(flags, reverse=True):
                raise TransformError(
                    f"Layer '{layer.layer.name}': the transforms kept must come after the ones "
                    f"stripped. Received: chain {chain} for weight '{key}'"
                )
            if not all(flags):
                kept[key] = [t for t, f in zip(chain, flags) if not f]
        inner = clone_layer(layer.layer)
        inner.set_weights(layer.stripped_weights(keep=lambda t: not baked(t)))
        if not kept:
            return inner
        fresh = {k: [keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(t))
                     for t in chain] for k, chain in kept.items()}
        new = OptimizedLayer(inner, fresh, name=layer.name)
        new.build_from_config(layer.get_build_config())
        for key, chain in kept.items():
            for old_t, new_t in zip(chain, fresh[key]):
                for src, dst in zip(layer.transform_variables(old_t), new.transform_variables(new_t)):
                    dst.assign(src.value)
        return new

    return clone_model(model, replace=replace)
