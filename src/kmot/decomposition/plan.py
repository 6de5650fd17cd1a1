"""Which layers of a model can be factored, how, and at which rank."""

from __future__ import annotations

from collections import Counter

import keras

from kmot.core.cost import layer_macs
from kmot.core.graph import require_graph_model
from kmot.core.kernels import kernels
from kmot.core.selection import LayerSelector, make_predicate, walk_layers
from kmot.core.wrapper import OptimizedLayer
from kmot.decomposition.conv import CONVS, conv_factorings
from kmot.decomposition.dense import dense_factorings, einsum_factorings
from kmot.decomposition.ranks import METHODS, Candidate, Criterion, choose
from kmot.errors import DecompositionError, LayerSelectionError, UnsupportedModelError

__all__ = ["check_model", "check_method", "plan"]


def check_model(model) -> None:
    """Raises for anything but a built, plain (unwrapped) Functional or Sequential model."""
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            "factorize takes a Keras model. Expected a keras.Model (Functional or "
            f"Sequential). Received: {type(model).__name__}")
    require_graph_model(model, "factoring a layer puts two or three layers in its place "
                               "in the graph, which a subclassed model's call() does not have")
    wrapped = [layer.name for layer in walk_layers(model) if isinstance(layer, OptimizedLayer)]
    if wrapped:
        raise UnsupportedModelError(
            f"Model '{model.name}' holds kmot wrappers ({', '.join(wrapped[:5])}). Factoring "
            "needs plain layers: strip the model first (kmot.core.strip, strip_pruning or "
            "strip_clustering), then factor it, then quantize. Received: a wrapped model")


def check_method(method) -> None:
    if method not in METHODS:
        raise DecompositionError(
            f"Unknown method. Expected one of {METHODS}. Received: method={method!r}")


def _factorings(layer) -> dict | str:
    if isinstance(layer, keras.layers.EinsumDense):
        return einsum_factorings(layer)
    if isinstance(layer, keras.layers.Dense):
        return dense_factorings(layer)
    if isinstance(layer, CONVS):
        return conv_factorings(layer)
    return f"{type(layer).__name__} is not factored (Dense, EinsumDense, Conv1D and Conv2D are)"


def _allowed(factorings: dict, method: str, layer) -> tuple[dict, str | None]:
    """The factorings `method` permits for `layer`, and a note when there are none."""
    if method == "auto" or "svd" in factorings:  # Dense and EinsumDense: SVD whatever the method
        return factorings, None
    if method == "svd":
        return {}, "left whole: method='svd' factors Dense and EinsumDense only"
    if method in factorings:
        return {method: factorings[method]}, None
    return {}, (f"left whole: method={method!r} does not apply to a {type(layer).__name__} "
                "(spatial SVD needs two spatial axes)")


def _candidates(model: keras.Model, method: str, layers: LayerSelector) -> list[Candidate]:
    selected = make_predicate(layers)
    chosen = [layer for layer in walk_layers(model) if selected(layer)]
    found = []
    for layer in chosen:
        if not kernels(layer):
            continue
        factorings = _factorings(layer)
        c = Candidate(layer.name, type(layer).__name__, int(layer.count_params()), layer_macs(layer))
        if isinstance(factorings, str):
            c.note = factorings
        else:
            c.factorings, c.note = _allowed(factorings, method, layer)
        found.append(c)
    if layers is not None and not any(c.factorings for c in found):
        raise LayerSelectionError(
            f"layers={layers!r} selects no layer factorize can factor. Expected Dense, "
            f"EinsumDense, Conv1D or Conv2D layers{' (with method=' + repr(method) + ')' if method != 'auto' else ''}. "
            f"Received: {[f'{l.name} ({type(l).__name__})' for l in chosen][:10] or 'no layer'}")
    names = Counter(layer.name for layer in walk_layers(model))
    twice = sorted(c.name for c in found if c.factorings and names[c.name] > 1)
    if twice:
        raise UnsupportedModelError(
            f"Layers {twice} share their names with other layers of nested models. Expected "
            "unique layer names, by which factorize finds the layers and rank= names them; "
            "rename them. Received: duplicate names")
    return found


def plan(model: keras.Model, criterion: Criterion, method: str,
         layers: LayerSelector) -> list[Candidate]:
    """Every selected layer with a kernel, each with its chosen option (or a note)."""
    found = _candidates(model, method, layers)
    if criterion.kind == "rank" and isinstance(criterion.value, dict):
        known = {c.name for c in found if c.factorings}
        unknown = sorted(set(criterion.value) - known)
        if unknown:
            raise DecompositionError(
                f"rank= names layers {unknown} that are not factorable layers of model "
                f"'{model.name}'. Expected names among {sorted(known)}. "
                f"Received: rank={criterion.value!r}")
    choose(found, criterion, total_params=int(model.count_params()))
    return found
