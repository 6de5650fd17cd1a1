"""Layer selection: the `layers=` argument shared by every kmot technique.

A selector is one of:

* ``None``: every layer;
* a layer name (``"dense_1"``) or a compiled regular expression
  (``re.compile("block[0-9]_conv")``, matched in full against the name);
* a layer class (``keras.layers.Conv2D``; subclasses match too);
* a predicate ``fn(layer) -> bool``;
* a list or tuple of any of the above (a layer matches if any item matches).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Union

import keras

from kmot.errors import LayerSelectionError

__all__ = ["LayerSelector", "make_predicate", "walk_layers", "walk_operations"]

LayerSelector = Union[
    None,
    str,
    "re.Pattern[str]",
    type,
    Callable[[keras.layers.Layer], bool],
    Iterable[Any],
]


def make_predicate(layers: LayerSelector) -> Callable[[keras.layers.Layer], bool]:
    """Turns a `layers=` selector into a predicate on layers.

    Args:
        layers: a selector (see the module docstring).

    Returns:
        A function ``fn(layer) -> bool``.

    Raises:
        LayerSelectionError: the selector is of an unknown kind, or a string is an
            invalid regular expression.

    Example:
        >>> import keras
        >>> pred = make_predicate([keras.layers.Conv2D, "head"])
        >>> pred(keras.layers.Dense(2, name="head"))
        True
    """
    if layers is None:
        return lambda layer: True
    if isinstance(layers, str):
        name = layers
        return lambda layer: layer.name == name
    if isinstance(layers, re.Pattern):
        pattern = layers
        return lambda layer: pattern.fullmatch(layer.name) is not None
    if isinstance(layers, type):
        if not issubclass(layers, keras.layers.Layer):
            raise LayerSelectionError(
                "A class given as `layers=` must be a Keras layer class, e.g. "
                f"keras.layers.Conv2D. Received: layers={layers!r}"
            )
        cls = layers
        return lambda layer: isinstance(layer, cls)
    if isinstance(layers, (list, tuple, set, frozenset)):
        preds = [make_predicate(item) for item in layers]
        return lambda layer: any(p(layer) for p in preds)
    if callable(layers):
        fn = layers
        return lambda layer: bool(fn(layer))
    raise LayerSelectionError(
        "`layers=` takes None, a layer name, a compiled regex, a layer class, a "
        "predicate `fn(layer) -> bool`, or a list of these. "
        f"Received: layers={layers!r} (type {type(layers).__name__})"
    )


def walk_layers(model: keras.layers.Layer):
    """Yields every leaf layer of a model, descending into nested models.

    Each layer is yielded once, even when it is shared. A subclassed model's
    leaves are the layers it holds (attributes, lists, dicts); one that holds
    none is a leaf itself.
    """
    seen: set[int] = set()

    def _walk(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, keras.Model) and (_is_graph(layer) or layer._layers):
            for sub in (layer.layers if _is_graph(layer) else layer._layers):
                yield from _walk(sub)
        elif isinstance(layer, keras.layers.Layer) and not isinstance(layer, keras.layers.InputLayer):
            yield layer

    yield from _walk(model)


def _is_graph(model) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def walk_operations(model: keras.layers.Layer):
    """Yields every leaf layer and every ``keras.ops`` operation node of a model.

    Operation nodes are what Functional graphs hold for ``keras.ops`` calls on
    symbolic tensors (``x + 3``, ``ops.relu6(x)``): they have no weights and are
    not layers. Nested graph models are entered.
    """
    yield from walk_layers(model)
    seen: set[int] = set()

    def _ops(m):
        if id(m) in seen or not _is_graph(m):
            return
        seen.add(id(m))
        for op in m._operations:
            if isinstance(op, keras.Model):
                yield from _ops(op)
            elif not isinstance(op, keras.layers.Layer):
                yield op

    yield from _ops(model)
