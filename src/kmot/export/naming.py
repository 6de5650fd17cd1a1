"""Which Keras layer a LiteRT tensor came from.

The converter names an op's output tensor after the TensorFlow name scopes of the
ops fused into it, e.g. ``functional_1/r_1/Relu;functional_1/c1_1/convolution``
for a Conv2D 'c1' fused with a ReLU 'r'. Tracing for export adds a suffix
(``_1``) to every scope; the suffix of the model's own scope tells which one.
"""

from __future__ import annotations

import re

import keras

from kmot.core.selection import walk_layers

__all__ = ["layer_names", "layers_of_tensor"]


def layer_names(model: keras.Model) -> set[str]:
    """Names of every layer of `model`, nested models and their layers included."""
    names = {model.name}

    def visit(m):
        for layer in m.layers:
            names.add(layer.name)
            if isinstance(layer, keras.Model):
                visit(layer)

    visit(model)
    names.update(layer.name for layer in walk_layers(model))
    return names


def _scope_suffix(first_segment: str, model_name: str) -> str:
    if first_segment.startswith(model_name):
        rest = first_segment[len(model_name) :]
        if re.fullmatch(r"(_\d+)?", rest):
            return rest
    return ""


def layers_of_tensor(tensor_name: str, names: set[str], model_name: str) -> list[str]:
    """The layers whose ops produced `tensor_name`, innermost scope of each part.

    Returns:
        Layer names, most upstream first (for a fused conv + relu: conv, relu);
        empty when the name carries no layer scope (e.g. ``StatefulPartitionedCall:0``).
    """
    found: list[str] = []
    for part in reversed(tensor_name.split(";")):
        segments = part.split("/")
        suffix = _scope_suffix(segments[0], model_name)
        for seg in reversed(segments[1:-1] or segments[:-1]):
            base = seg[: -len(suffix)] if suffix and seg.endswith(suffix) else None
            layer = base if base in names else (seg if seg in names else None)
            if layer is not None and layer != model_name:
                if layer not in found:
                    found.append(layer)
                break
    return found
