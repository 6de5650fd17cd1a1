"""`ClusterTransform`: a weight shares a few trainable values (centroids)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from kmot.clustering.centroids import init_centroids
from kmot.core.constraints import apply_mask, take_shared
from kmot.core.kernels import channels_back, channels_last
from kmot.core.transform import WeightTransform

__all__ = ["ClusterTransform"]


@keras.saving.register_keras_serializable(package="kmot")
class ClusterTransform(WeightTransform):
    """Replaces each weight by its nearest centroid.

    Centroids are trainable (gradients flow through the gather); the weight
    itself keeps training through a straight-through estimator, and its nearest
    centroid is re-assigned at every step, so clusters follow training.

    Args:
        number_of_clusters: centroids per weight (per channel with `per_channel`).
        init: ``"kmeans++"``, ``"linear"``, ``"density"`` or ``"random"``.
        preserve_sparsity: weights that are exactly zero when wrapped stay zero,
            on a fixed zero centroid that counts as one of the clusters.
        per_channel: separate centroids for each output channel.
        channel_axes: the output-channel axes of the weight (see
            `kmot.core.KernelLayout`); default the last axis. `cluster_weights`
            passes each kernel's own (a depthwise kernel's last two, a transposed
            convolution's second-to-last).
    """

    def __init__(self, number_of_clusters: int, *, init: str = "kmeans++",
                 preserve_sparsity: bool = False, per_channel: bool = False,
                 channel_axes: tuple[int, ...] | None = None):
        self.number_of_clusters = number_of_clusters
        self.init = init
        self.preserve_sparsity = preserve_sparsity
        self.per_channel = per_channel
        self.channel_axes = tuple(channel_axes) if channel_axes is not None else (-1,)

    def _initial(self, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Initial centroids, (channels or 1, k'), and the nonzero mask."""
        nonzero = weight != 0 if self.preserve_sparsity else np.ones(weight.shape, bool)
        # The zero of preserve_sparsity is one of the clusters. The count must not
        # depend on the data: a rebuilt (cloned, loaded) layer needs the same shapes.
        k = self.number_of_clusters - (1 if self.preserve_sparsity else 0)
        if self.per_channel:
            by_channel = channels_last(weight, self.channel_axes)
            kept = channels_last(nonzero, self.channel_axes)
            slices = [by_channel[..., c] for c in range(by_channel.shape[-1])]
            masks = [kept[..., c] for c in range(by_channel.shape[-1])]
        else:
            slices, masks = [weight], [nonzero]
        rows = [init_centroids(s[m] if m.any() else np.zeros(1), k, self.init, seed=i)
                for i, (s, m) in enumerate(zip(slices, masks))]
        return np.stack(rows), nonzero

    def build(self, weight, add_weight):
        centroids, nonzero = self._initial(np.asarray(weight.numpy()))
        self.centroids = add_weight("centroids", centroids.shape, trainable=True,
                                    initializer=keras.initializers.Constant(centroids))
        if self.preserve_sparsity:
            self.keep = add_weight("keep", weight.shape,
                                   initializer=keras.initializers.Constant(nonzero.astype("float32")))

    def _clustered(self, value):
        centroids = self.centroids.value
        if self.per_channel:
            # (..., C) against (C, k): distance to each channel's own centroids.
            by_channel = channels_last(value, self.channel_axes)
            dist = ops.abs(ops.expand_dims(by_channel, -1) - centroids)
            index = ops.argmin(dist, axis=-1)
            one_hot = ops.one_hot(index, centroids.shape[-1], dtype=value.dtype)
            clustered = ops.sum(one_hot * centroids, axis=-1)
            return channels_back(clustered, self.channel_axes, tuple(value.shape))
        # Nearest centroid by binary search over the midpoints of the sorted
        # centroids: O(n log k), not the O(n k) distance matrix (3x the step time).
        ordered = ops.take(centroids[0], ops.argsort(centroids[0]))
        midpoints = (ordered[1:] + ordered[:-1]) / 2
        index = ops.searchsorted(midpoints, ops.reshape(value, (-1,)))
        return ops.reshape(take_shared(ordered, index), value.shape)

    def __call__(self, value, *, training):
        clustered = self._clustered(value)
        if training:  # straight-through: the weight trains as if unclustered
            clustered = clustered + value - ops.stop_gradient(value)
        if self.preserve_sparsity:
            clustered = apply_mask(clustered, self.keep.value)
        return clustered

    def summaries(self, value) -> dict[str, float]:
        """Distinct values the clustered weight holds (the zero of preserve_sparsity
        included), for `ClusteringSummaries`."""
        clustered = ops.convert_to_numpy(self(value, training=False))
        return {"distinct_values": float(len(np.unique(clustered)))}

    def get_config(self) -> dict[str, Any]:
        return {"number_of_clusters": self.number_of_clusters, "init": self.init,
                "preserve_sparsity": self.preserve_sparsity, "per_channel": self.per_channel,
                "channel_axes": list(self.channel_axes)}
