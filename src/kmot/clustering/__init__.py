"""Weight clustering for Keras 3: a few shared, trainable values per weight."""

from kmot.clustering.centroids import CENTROID_INITS, init_centroids
from kmot.clustering.cluster import (
    ClusterSummary,
    WeightClusters,
    cluster_weights,
    clusterable_weights,
    strip_clustering,
    summary,
)
from kmot.clustering.tensorboard import ClusteringSummaries
from kmot.clustering.transform import ClusterTransform

__all__ = [
    "CENTROID_INITS",
    "ClusterSummary",
    "ClusterTransform",
    "ClusteringSummaries",
    "WeightClusters",
    "cluster_weights",
    "clusterable_weights",
    "init_centroids",
    "strip_clustering",
    "summary",
]
