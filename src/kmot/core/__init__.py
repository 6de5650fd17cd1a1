"""Model surgery, kernels and the one wrapper; knows nothing of any technique."""

from kmot.core.channels import ChannelGraph, ChannelGroup, ChannelUse, channel_graph
from kmot.core.chains import Carried, Reparameterized, copy_transform, rewrap
from kmot.core.constraints import KeepZerosTransform, SharedValuesTransform
from kmot.core.graph import as_functional, clone_layer, clone_model, input_shapes, is_graph_model
from kmot.core import nested  # noqa: F401 - registers PlacedModel (built by rewrites)
from kmot.core.kernels import (
    Kernel,
    KernelLayout,
    kernel_layouts,
    kernels,
    register_kernel_layout,
    unknown_weights,
)
from kmot.core.rewrite import effective_weights, find_wrappers, simulations, strip
from kmot.core.selection import LayerSelector, make_predicate, walk_layers, walk_operations
from kmot.core.summaries import TransformSummaries, collect_summaries
from kmot.core.transform import AddWeight, WeightTransform, WeightView, flatten_chain
from kmot.core.wrapper import OptimizedLayer, weight_key, weight_keys

__all__ = [
    "AddWeight",
    "Carried",
    "ChannelGraph",
    "ChannelGroup",
    "ChannelUse",
    "KeepZerosTransform",
    "Kernel",
    "KernelLayout",
    "LayerSelector",
    "OptimizedLayer",
    "Reparameterized",
    "SharedValuesTransform",
    "TransformSummaries",
    "WeightTransform",
    "WeightView",
    "as_functional",
    "channel_graph",
    "clone_layer",
    "clone_model",
    "collect_summaries",
    "copy_transform",
    "effective_weights",
    "find_wrappers",
    "flatten_chain",
    "input_shapes",
    "is_graph_model",
    "kernel_layouts",
    "kernels",
    "make_predicate",
    "register_kernel_layout",
    "rewrap",
    "simulations",
    "strip",
    "unknown_weights",
    "walk_layers",
    "walk_operations",
    "weight_key",
    "weight_keys",
]
