"""Model surgery: copies of any Keras 3 model with some layers replaced.

Every kmot technique is a rewrite: it copies the user's model (which stays
untouched, so the baseline remains available), hands each selected layer's copy
to a `replace` function (which usually wraps it in an `OptimizedLayer`) and
copies all weights across.

* Functional and Sequential models, multi-input/output, shared layers (copied
  once, still shared), nested models, and the operation nodes that ``keras.ops``
  calls on symbolic tensors leave (MobileNetV3's ``x * relu6(x + 3) / 6``).
* Subclassed models: a copy is made from the class's config and the layers it
  holds (attributes, lists, dicts) are swapped for their copies or replacements,
  so weight-only techniques work without the model's graph. `as_functional`
  traces a subclassed model's ``call`` into a graph for rewrites that need one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from kmot.core.selection import LayerSelector, make_predicate
from kmot.errors import UnsupportedModelError

__all__ = ["clone_model", "clone_layer", "is_graph_model", "as_functional", "input_shapes"]

Replace = Callable[[keras.layers.Layer], "keras.layers.Layer | None"]


def is_graph_model(model: Any) -> bool:
    """True for Sequential and Functional models (whose layer graph is known)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"Expected a keras.Model. Received: {model!r} (type {type(model).__name__})"
        )
    if is_graph_model(model):
        if not model.built or not model.inputs:
            raise UnsupportedModelError(
                f"Model '{model.name}' is not built: its input shape is unknown. "
                "Expected a model built with `keras.Input(...)` (or call "
                "`model.build(input_shape)` first). Received: a model with no inputs"
            )
        return
    if not model.built or not model.weights:
        raise UnsupportedModelError(
            f"Subclassed model '{model.name}' ({type(model).__name__}) has no weights yet. "
            "Expected a built model: call it once on a batch of data (model(x)) or "
            "`model.build(input_shape)` first. Received: an unbuilt model"
        )


def _classes(layer: keras.layers.Layer) -> dict[str, type]:
    """The classes of `layer` and the layers inside it, by name: a custom class defined
    in a function (never registered) still deserializes inside a wrapper's config."""
    try:
        inner = layer._flatten_layers(include_self=True, recursive=True)
    except Exception:  # noqa: BLE001 - a layer that does not track sublayers
        inner = [layer]
    return {type(item).__name__: type(item) for item in inner}


def require_graph_model(model: keras.Model, why: str) -> None:
    """Refuses a model without a built graph, saying `why` the rewrite needs one.

    Raises:
        UnsupportedModelError: a subclassed model, or one not built with keras.Input.
    """
    if not is_graph_model(model):
        raise UnsupportedModelError(
            f"Model '{model.name}' is subclassed: {why}. Expected a Functional or "
            "Sequential model; trace it first with kmot.core.as_functional(model). "
            f"Received: a {type(model).__name__}")
    if not model.built or not model.inputs:
        raise UnsupportedModelError(
            f"Model '{model.name}' is not built. Expected a model built with keras.Input. "
            "Received: a model with no inputs")


def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new, independent copy of `layer`, built and holding the same weights."""
    scope = keras.saving.custom_object_scope(_classes(layer))
    try:
        with scope:
            new = keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(layer)
            )
    except Exception:  # noqa: BLE001 - e.g. an unregistered custom class
        new = None
    try:
        if new is None:  # what keras.models.clone_model does by default
            with keras.saving.custom_object_scope(_classes(layer)):
                new = type(layer).from_config(layer.get_config())
    except Exception as err:  # noqa: BLE001 - any failure means "not clonable"
        raise UnsupportedModelError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be cloned from "
            "its config. Expected a layer whose `get_config()` / `from_config()` "
            "round-trip (custom layers: implement get_config and register the "
            "class with @keras.saving.register_keras_serializable). "
            f"Received: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        ) from err
    if new.name != layer.name:
        # A config without the name (a custom layer with no get_config whose
        # __init__ takes no `name`) gives the copy a fresh one, built or not;
        # rewrites find layers by name, so the copy keeps the original's.
        new.name = layer.name
    if layer.built and not new.built:
        build_config = layer.get_build_config()
        if build_config:
            new.build_from_config(build_config)
    if layer.built and new.built:
        copy_weights(layer, new)
    return new


def clone_operation(op: Any) -> Any:
    """A new operation node equal to `op` (``keras.ops`` calls hold no weights)."""
    try:
        return type(op).from_config(op.get_config())
    except Exception:  # noqa: BLE001 - an op without a config: stateless, reuse it
        return op


def copy_weights(src: keras.layers.Layer, dst: keras.layers.Layer) -> None:
    """Copies `src`'s weights into `dst`, which must have the same structure."""
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
    """Copies any built Keras model, optionally replacing layers.

    The copy holds copies of all weights; the input model is left untouched.

    Args:
        model: a built Sequential, Functional or subclassed model (nested
            models, shared layers and ``keras.ops`` nodes allowed).
        replace: ``fn(layer_copy) -> new_layer | None`` called for each selected
            leaf layer with an independent, built copy holding the original's
            weights; return a replacement (e.g. the copy wrapped in an
            `OptimizedLayer`) or None to keep the copy. In a Functional graph
            (nested ones too; see `as_functional` for Sequential models) it may
            return a list of layers, called one after the other in the layer's
            place (e.g. a kernel factored into two layers); a shared layer's
            chain is shared.
        layers: which layers `replace` sees (see `kmot.core.make_predicate`).
        call_function: ``fn(operation, *args, **kwargs)`` calling each new layer
            or operation in a Functional graph, for node-level rewrites (see
            `keras.models.clone_model`). Not for subclassed models: trace them
            with `as_functional` first.

    Returns:
        A new model with the same inputs, outputs and names (a subclassed model:
        an instance of its class).

    Raises:
        UnsupportedModelError: an unbuilt model, a layer that cannot be cloned
            from its config, or `call_function` on a subclassed model.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> copy = clone_model(model)
        >>> copy is model
        False
    """
    _check_model(model)
    selected = make_predicate(layers)
    pending: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []
    chains: dict[int, list[keras.layers.Layer]] = {}  # id(first layer) -> the chain

    def clone_leaf(layer):
        if not isinstance(layer, keras.layers.Layer):
            return clone_operation(layer)
        if isinstance(layer, keras.Model) and not is_graph_model(layer):
            return _clone_subclassed(layer, clone_leaf)
        if is_graph_model(layer):  # nested in a subclassed model
            return keras.models.clone_model(layer, clone_function=clone_leaf, recursive=True)
        new = clone_layer(layer)
        if replace is not None and selected(layer):
            replacement = replace(new)
            if isinstance(replacement, (list, tuple)):
                return _chain(layer, replacement, chains)
            if replacement is not None:
                return replacement
        if layer.built and not new.built:
            pending.append((layer, new))
        return new

    if not is_graph_model(model):
        if call_function is not None:
            raise UnsupportedModelError(
                f"Model '{model.name}' is subclassed: its layers are called by its own "
                "`call`, so a node-level rewrite needs its graph. Trace it first with "
                "kmot.core.as_functional(model). Received: call_function on a "
                f"{type(model).__name__}"
            )
        copy = _clone_subclassed(model, clone_leaf)
        _check_chains_called(chains, "a subclassed model, whose call() names its layers")
        return copy
    kwargs = {}
    if call_function is not None:
        kwargs["call_function"] = call_function
    if not isinstance(model, keras.Sequential):
        kwargs["call_function"] = _calling_chains(chains, call_function)
    new_model = keras.models.clone_model(
        model, clone_function=clone_leaf, recursive=True, **kwargs
    )
    for src, dst in pending:  # layers that could only be built inside the graph
        copy_weights(src, dst)
    _check_chains_called(chains, "a Sequential model, whose layers take one replacement each")
    return new_model


def _check_chains_called(chains: dict, where: str) -> None:
    """Raises if a chain was not put in the graph (only Functional graphs call chains)."""
    uncalled = [c[-1].name for c in chains.values() if len(c) > 1 and not c[-1]._inbound_nodes]
    if uncalled:
        raise UnsupportedModelError(
            f"`replace` returned a chain of layers ending in {uncalled} inside {where}. "
            "Expected a Functional graph: convert the model with "
            "kmot.core.as_functional(model) first. Received: a chain of layers there"
        )


def _chain(layer, replacement, chains: dict) -> keras.layers.Layer:
    """Records a chain of layers replacing `layer`; its first layer stands for it."""
    if not replacement or not all(isinstance(r, keras.layers.Layer) for r in replacement):
        raise UnsupportedModelError(
            f"`replace` returned {replacement!r} for layer '{layer.name}'. Expected a "
            "layer, None, or a non-empty list of layers to call one after the other. "
            f"Received: {type(replacement).__name__} of {len(replacement)}"
        )
    chains[id(replacement[0])] = list(replacement)
    return replacement[0]


def _calling_chains(chains: dict, call_function: Callable | None) -> Callable:
    """A call_function calling each recorded chain in its first layer's place."""
    call = call_function or (lambda op, *args, **kwargs: op(*args, **kwargs))

    def call_chain(op, *args, **kwargs):
        chain = chains.get(id(op))
        if chain is None:
            return call(op, *args, **kwargs)
        out = call(chain[0], *args, **kwargs)
        for layer in chain[1:]:
            out = call(layer, out)
        return out

    return call_chain


def _unwrapped_type(layer) -> type:
    inner = getattr(layer, "layer", None)
    return type(inner) if isinstance(layer, keras.layers.Wrapper) and inner is not None else type(layer)


def _clone_subclassed(model: keras.Model, clone_leaf: Callable) -> keras.Model:
    """A subclassed model from its class's config, holding copies of `model`'s layers."""
    try:
        shell = _from_config(model)
    except Exception as err:  # noqa: BLE001 - any failure means "not copyable"
        raise UnsupportedModelError(
            f"Subclassed model '{model.name}' ({type(model).__name__}) cannot be copied: "
            "kmot rebuilds it from its config and swaps in the layers it holds. Expected "
            "`type(model).from_config(model.get_config())` to work: give __init__ only "
            "arguments Keras can serialize, or implement get_config(); or rebuild the "
            f"model with the Functional API. Received: {type(err).__name__}: {err}"
        ) from err
    sources, slots = list(model._layers), list(shell._layers)
    if [_unwrapped_type(s) for s in sources] != [type(s) for s in slots]:
        raise UnsupportedModelError(
            f"Subclassed model '{model.name}' ({type(model).__name__}) rebuilt from its "
            "config holds other layers than the original. Expected __init__ to create "
            "the same layers every time. Received: "
            f"{[type(s).__name__ for s in slots]} instead of "
            f"{[_unwrapped_type(s).__name__ for s in sources]}"
        )
    for src, slot in zip(sources, slots):
        _swap(shell, slot, clone_leaf(src))
    own = [v for v in model.weights if not any(v is w for s in sources for w in s.weights)]
    if own:  # weights the model's own build() creates
        shell.build_from_config(model.get_build_config())
        shell_own = [v for v in shell.weights
                     if not any(v is w for s in shell._layers for w in s.weights)]
        for dst, src in zip(shell_own, own):
            dst.assign(src.value)
    shell.built = True
    build_config = model.get_build_config()
    if build_config and "input_shape" in build_config:
        shell._build_shapes_dict = dict(model._build_shapes_dict or {})
    return shell


def _from_config(model: keras.Model) -> keras.Model:
    """``type(model).from_config(model.get_config())``; for an ``__init__`` that
    takes fewer arguments than Keras's base config (``def __init__(self)``), only
    the ones it takes."""
    import inspect

    cls, config = type(model), model.get_config()
    try:
        return cls.from_config(config)
    except TypeError:
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            raise
        return cls(**{k: v for k, v in config.items() if k in params})


def _swap(owner: keras.layers.Layer, old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Puts `new` wherever `owner` holds `old` (attributes, lists, dicts), in place."""
    if new is old:
        return
    for name, value in list(vars(owner).items()):
        if value is old:
            object.__setattr__(owner, name, new)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    list.__setitem__(value, i, new)
        elif isinstance(value, dict):
            for key, item in list(value.items()):
                if item is old:
                    dict.__setitem__(value, key, new)
    ids = getattr(owner, "_tracker", None) and owner._tracker.stored_ids.get("layers")
    if ids is not None:
        ids.discard(id(old))
        ids.add(id(new))


def input_shapes(model: keras.Model) -> list[tuple]:
    """The input shapes of a model (batch dimension None): from its inputs, or
    the shapes a subclassed model was built with."""
    if getattr(model, "_inputs_struct", None) is not None and model.inputs:
        return [tuple(t.shape) for t in model.inputs]
    config = model.get_build_config() or {}
    shapes = config.get("input_shape")
    if shapes is None and config.get("shapes_dict"):
        shapes = list(config["shapes_dict"].values())
        shapes = shapes[0] if len(shapes) == 1 else shapes
    if shapes is None:
        raise UnsupportedModelError(
            f"The input shape of model '{model.name}' is unknown. Expected a model "
            "called once on data or built with model.build(input_shape). "
            "Received: a model with no build shapes"
        )
    nested = isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple))
    shapes = shapes if nested else [shapes]
    return [(None, *tuple(s)[1:]) for s in shapes]


def as_functional(model: keras.Model) -> keras.Model:
    """A Functional copy of `model`, for rewrites that need its graph.

    Sequential models (nested ones too) become Functional; a subclassed model is
    traced: its ``call`` runs on symbolic inputs of the shapes it was built
    with, which records the layers and ops it calls as a graph. Weights are
    copied; `model` is untouched.

    Raises:
        UnsupportedModelError: a subclassed model whose ``call`` cannot run on
            symbolic tensors (Python control flow on values, NumPy calls, ...).

    Example:
        >>> graph = as_functional(my_subclassed_model)  # doctest: +SKIP
    """
    _check_model(model)

    def convert(m):
        if isinstance(m, keras.Sequential):
            inputs = keras.Input(batch_shape=m.inputs[0].shape, dtype=m.inputs[0].dtype,
                                 name=m.inputs[0]._keras_history.operation.name)
            x = inputs
            for layer in m.layers:
                x = convert(layer)(x)
            return keras.Model(inputs, x, name=m.name)
        if is_graph_model(m):
            return keras.models.clone_model(m, clone_function=convert, recursive=False)
        if isinstance(m, keras.Model):
            return _trace(m)
        if not isinstance(m, keras.layers.Layer):
            return clone_operation(m)
        return clone_layer(m)

    if not is_graph_model(model):
        return _trace(model)
    if isinstance(model, keras.Sequential):
        return convert(model)
    return keras.models.clone_model(model, clone_function=convert, recursive=False)


def _trace(model: keras.Model) -> keras.Model:
    """A subclassed model's ``call`` recorded as a Functional graph (on a copy)."""
    copy = clone_model(model)
    try:
        inputs = [keras.Input(batch_shape=s, name=f"input_{i}" if i else "input")
                  for i, s in enumerate(input_shapes(model))]
        outputs = copy.call(inputs[0] if len(inputs) == 1 else inputs)
        traced = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name)
    except Exception as err:  # noqa: BLE001 - tracing user code raises anything
        raise UnsupportedModelError(
            f"Subclassed model '{model.name}' ({type(model).__name__}) could not be "
            "traced into a graph, which this rewrite needs (weight-only techniques "
            "such as pruning and clustering do not). Expected its call() to run on "
            "symbolic keras.Input tensors using layers and keras.ops only. Rebuild "
            "it with the Functional API, or move the untraceable part (Python "
            "control flow on tensor values, NumPy calls) into a custom layer. "
            f"Received: {type(err).__name__}: {str(err)[:500]}"
        ) from err
    return traced  # its layers are the private copy's
