"""Model surgery and the one wrapper; knows nothing of any technique."""

from kmot.core.rewrite import (
    clone_layer,
    clone_model,
    effective_weights,
    find_wrappers,
    is_graph_model,
    strip,
)
from kmot.core.selection import LayerSelector, make_predicate, walk_layers
from kmot.core.transform import AddWeight, WeightTransform
from kmot.core.wrapper import OptimizedLayer, weight_key, weight_keys

__all__ = [
    "AddWeight",
    "LayerSelector",
    "OptimizedLayer",
    "WeightTransform",
    "clone_layer",
    "clone_model",
    "effective_weights",
    "find_wrappers",
    "is_graph_model",
    "make_predicate",
    "strip",
    "walk_layers",
    "weight_key",
    "weight_keys",
]
