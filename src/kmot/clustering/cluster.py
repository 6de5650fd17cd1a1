"""`cluster_weights` / `strip_clustering`: weight clustering for Keras 3 models."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from kmot.clustering.centroids import CENTROID_INITS
from kmot.clustering.transform import ClusterTransform
from kmot.core import OptimizedLayer, clone_model, flatten_chain, kernels, strip
from kmot.core.kernels import channels_last, warn_unknown_weights
from kmot.core.rewrite import effective_weights
from kmot.core.selection import LayerSelector, make_predicate, walk_layers
from kmot.core.wrapper import weight_key
from kmot.errors import LayerSelectionError, TransformError

__all__ = ["cluster_weights", "strip_clustering", "clusterable_weights", "summary",
           "ClusterSummary", "WeightClusters"]


def _clusterable(layer: keras.layers.Layer) -> list[tuple[keras.Variable, tuple[int, ...]]]:
    """(variable, output-channel axes) of each weight to cluster in `layer`."""
    if isinstance(layer, OptimizedLayer):
        layer = layer.layer
    custom = getattr(layer, "get_clusterable_weights", None)
    if callable(custom):
        # tfmot's protocol lists (name, variable) pairs; a bare variable is taken too
        return [(v[1] if isinstance(v, tuple) else v, (-1,)) for v in custom()]
    return [(k.variable, k.layout.out_axes) for k in kernels(layer)]


def clusterable_weights(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The weights kmot clusters in `layer`: its kernels (see `kmot.core.kernels`),
    or a custom layer's ``get_clusterable_weights()`` (variables, or tfmot's
    ``(name, variable)`` pairs)."""
    return [v for v, _ in _clusterable(layer)]


def _check(number_of_clusters, init):
    if isinstance(number_of_clusters, bool) or not isinstance(number_of_clusters, int) \
            or number_of_clusters < 2:
        raise TransformError(
            "`number_of_clusters` must be an int >= 2. "
            f"Received: number_of_clusters={number_of_clusters!r}"
        )
    if init not in CENTROID_INITS:
        raise TransformError(
            f"`cluster_centroids_init` must be one of {list(CENTROID_INITS)}. "
            f"Received: cluster_centroids_init={init!r}"
        )


def cluster_weights(
    to_cluster: keras.Model | keras.layers.Layer,
    number_of_clusters: int,
    *,
    cluster_centroids_init: str = "kmeans++",
    preserve_sparsity: bool = False,
    cluster_per_channel: bool = False,
    layers: LayerSelector = None,
) -> keras.Model:
    """Wraps a model's kernels so that each shares `number_of_clusters` values.

    Fine-tune the result (centroids and assignments train), then
    `strip_clustering` it: each kernel then holds at most `number_of_clusters`
    distinct values, which gzip (and LiteRT's int8 export) store compactly.

    Args:
        to_cluster: a Sequential or Functional model (a copy is returned), or a
            single layer (returned wrapped, e.g. from a ``clone_model``
            ``clone_function``).
        number_of_clusters: distinct values per kernel (per channel with
            `cluster_per_channel`), the zero of `preserve_sparsity` included.
        cluster_centroids_init: ``"kmeans++"``, ``"linear"``, ``"density"`` or
            ``"random"``.
        preserve_sparsity: zeros (e.g. from pruning) stay exactly zero.
        cluster_per_channel: separate centroids per output channel.
        layers: which layers to cluster (default: all with kernels).

    Returns:
        The wrapped model.

    Raises:
        TransformError: invalid cluster count or init.
        LayerSelectionError: `layers` names a layer with nothing to cluster.

    Example:
        >>> clustered = cluster_weights(model, number_of_clusters=16)  # doctest: +SKIP
        >>> clustered.fit(x, y, epochs=5)                              # doctest: +SKIP
        >>> final = strip_clustering(clustered)                        # doctest: +SKIP
    """
    _check(number_of_clusters, cluster_centroids_init)
    named = {layers} if isinstance(layers, str) else (
        {n for n in layers if isinstance(n, str)} if isinstance(layers, (list, tuple, set)) else set())
    selected = make_predicate(layers)
    if layers is not None and not any(selected(layer) for layer in walk_layers(to_cluster)):
        raise LayerSelectionError(
            f"`layers=` selects no layer of model '{to_cluster.name}'. Received: layers={layers!r}"
        )

    def replace(layer):
        inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
        found = _clusterable(inner)
        if not found:
            if inner.name in named:
                raise LayerSelectionError(
                    f"Layer '{inner.name}' ({type(inner).__name__}) has no clusterable weights. "
                    "Select other layers with `layers=` or implement "
                    f"`get_clusterable_weights()`. Received: layers selecting '{inner.name}'"
                )
            return None
        wrapper = layer if isinstance(layer, OptimizedLayer) else OptimizedLayer(layer, {})
        for v, axes in found:
            wrapper.add_transform(weight_key(inner, v), ClusterTransform(
                number_of_clusters, init=cluster_centroids_init,
                preserve_sparsity=preserve_sparsity, per_channel=cluster_per_channel,
                channel_axes=axes))
        return wrapper

    if not isinstance(to_cluster, keras.Model):
        if not isinstance(to_cluster, keras.layers.Layer):
            raise TransformError(
                f"Expected a keras.Model or a keras layer to cluster. Received: "
                f"{type(to_cluster).__name__}")
        wrapped = replace(to_cluster)
        if wrapped is None:
            raise LayerSelectionError(
                f"Layer '{to_cluster.name}' ({type(to_cluster).__name__}) has no clusterable "
                "weights. Expected a layer with a kernel (Dense, convolutions, ...) or one "
                "implementing get_clusterable_weights(). Received: that layer")
        return wrapped
    clustered = clone_model(to_cluster, layers=layers, replace=replace)
    # a layer that lists its clusterable weights has said what the others are for
    warn_unknown_weights(
        to_cluster, lambda layer: selected(layer) and not callable(
            getattr(layer, "get_clusterable_weights", None)), "cluster_weights")
    return clustered


def _is_clustering(transform) -> bool:
    return isinstance(transform, ClusterTransform)


def _has_clustering(wrapper: OptimizedLayer) -> bool:
    return any(_is_clustering(t) for c in wrapper.transforms.values() for t in flatten_chain(c))


def strip_clustering(model: keras.Model) -> keras.Model:
    """Removes clustering wrappers: plain layers holding the clustered values.

    Each weight's chain is baked up to its clustering (a pruning mask before it
    included); transforms after it (a fake quantization) stay, in a wrapper.

    Example:
        >>> final = strip_clustering(clustered)  # doctest: +SKIP
    """
    return strip(model, wrappers=_has_clustering, through=_is_clustering)


@dataclass(frozen=True)
class WeightClusters:
    layer: str
    weight: str
    shape: tuple[int, ...]
    unique_values: int
    max_unique_per_channel: int
    sparsity: float


@dataclass(frozen=True)
class ClusterSummary:
    """Distinct values of every clusterable weight, as the layers compute with them."""

    weights: tuple[WeightClusters, ...]

    def __str__(self) -> str:
        lines = [f"{'layer':<24} {'weight':<18} {'unique':>7} {'per channel':>12} {'sparsity':>9}"]
        for w in self.weights:
            lines.append(f"{w.layer:<24} {w.weight:<18} {w.unique_values:>7} "
                         f"{w.max_unique_per_channel:>12} {w.sparsity:>9.1%}")
        return "\n".join(lines)


def summary(model: keras.Model) -> ClusterSummary:
    """Unique values per clusterable weight (and per output channel).

    Example:
        >>> print(summary(clustered))  # doctest: +SKIP
    """
    rows = []
    inners = [getattr(layer, "layer", layer) for layer in walk_layers(model)]
    axes = {(inner.name, weight_key(inner, v)): a for inner in inners for v, a in _clusterable(inner)}
    for layer, key, a in effective_weights(model, clusterable_weights):
        by_channel = channels_last(a, axes.get((layer.name, key), (-1,)))
        per_channel = max(len(np.unique(by_channel[..., c])) for c in range(by_channel.shape[-1]))
        rows.append(WeightClusters(layer.name, key, tuple(a.shape), len(np.unique(a)),
                                   per_channel, float(np.mean(a == 0))))
    return ClusterSummary(tuple(rows))
