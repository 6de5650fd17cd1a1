"""``tfmot.clustering.keras`` on kmot: weight clustering with tfmot's names.

Native equivalents: `kmot.clustering.cluster_weights` (``cluster_centroids_init``
as a string: "kmeans++", "linear", "density", "random"), `strip_clustering`,
`ClusteringSummaries`.
"""

from __future__ import annotations

import abc
import enum
from typing import Any

from kmot import clustering as _native
from kmot.compat.tfmot._scopes import WRAPPER, custom_scope, unmatched
from kmot.errors import KmotError

__all__ = ["CentroidInitialization", "ClusterableLayer", "cluster_scope", "cluster_weights",
           "strip_clustering"]

strip_clustering = _native.strip_clustering


class CentroidInitialization(str, enum.Enum):
    """tfmot's centroid initializations; the values are kmot's names for them."""

    KMEANS_PLUS_PLUS = "kmeans++"
    LINEAR = "linear"
    DENSITY_BASED = "density"
    RANDOM = "random"


class ClusterableLayer(abc.ABC):
    """A custom layer that says which of its weights to cluster (tfmot's protocol).

    kmot reads ``get_clusterable_weights()`` from any layer, with or without this base.
    """

    @abc.abstractmethod
    def get_clusterable_weights(self) -> list[Any]:
        """The weights to cluster."""


def cluster_weights(to_cluster, number_of_clusters, cluster_centroids_init=
                    CentroidInitialization.KMEANS_PLUS_PLUS, **kwargs):
    """tfmot's signature: ``cluster_weights(model_or_layer, k, init, preserve_sparsity=...,
    cluster_per_channel=...)``.

    Raises:
        KmotError: an argument kmot does not have.
    """
    known = {"preserve_sparsity", "cluster_per_channel"}
    if set(kwargs) - known:
        raise KmotError(
            f"cluster_weights has no argument(s) {sorted(set(kwargs) - known)} in kmot. "
            f"Expected number_of_clusters, cluster_centroids_init, {', '.join(sorted(known))} "
            f"(native: kmot.clustering.cluster_weights also takes layers=). Received: "
            f"{sorted(kwargs)}")
    init = cluster_centroids_init.value if isinstance(
        cluster_centroids_init, CentroidInitialization) else cluster_centroids_init
    return _native.cluster_weights(to_cluster, number_of_clusters,
                                   cluster_centroids_init=init, **kwargs)


def cluster_scope():
    """tfmot's loading scope: kmot's clustering classes are registered already."""
    return custom_scope()


# tfmot's names kmot has no counterpart of: a KmotError naming the native way.
__getattr__ = unmatched("tfmot.clustering.keras", {
    "ClusterWeights": f"{WRAPPER}; kmot.clustering.strip_clustering(model) removes them",
    "ClusterWeightsMHA": f"{WRAPPER}; kmot.clustering.strip_clustering(model) removes them",
    "cluster_wrapper": f"{WRAPPER}; kmot.clustering.strip_clustering(model) removes them",
    "ClusteringAlgorithm": "a custom layer's get_clusterable_weights() names what to "
                           "cluster; cluster_weights(cluster_per_channel=True) per channel",
    "clustering_registry": "a custom layer's get_clusterable_weights() names what to cluster",
})
