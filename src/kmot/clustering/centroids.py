"""Initial centroids for weight clustering (NumPy; run once, when layers are wrapped)."""

from __future__ import annotations

import numpy as np

from kmot.errors import KmotError

__all__ = ["init_centroids", "CENTROID_INITS"]

CENTROID_INITS = ("kmeans++", "linear", "density", "random")


def init_centroids(values: np.ndarray, k: int, method: str, *, seed: int = 0) -> np.ndarray:
    """`k` sorted initial centroids for the 1-D array `values`.

    * ``"kmeans++"``: k-means++ seeding on the values (as tfmot): spread by
      squared distance, so outliers keep a value and most weights share a few;
    * ``"linear"``: evenly spaced between min and max (keeps the outliers);
    * ``"density"``: at evenly spaced quantiles of the value distribution;
    * ``"random"``: uniform at random between min and max.

    Fewer distinct values than `k` give those values (padded by repetition).
    """
    values = np.asarray(values, np.float64).ravel()
    if method not in CENTROID_INITS:
        raise KmotError(
            f"Expected cluster_centroids_init to be one of {list(CENTROID_INITS)}. "
            f"Received: cluster_centroids_init={method!r}"
        )
    distinct = np.unique(values)
    if distinct.size <= k:
        return np.resize(distinct, k).astype(np.float32)
    lo, hi = float(values.min()), float(values.max())
    if method == "linear":
        centroids = np.linspace(lo, hi, k)
    elif method == "density":
        centroids = np.quantile(values, (np.arange(k) + 0.5) / k)
    elif method == "random":
        centroids = np.random.default_rng(seed).uniform(lo, hi, k)
    else:
        from sklearn.cluster import kmeans_plusplus

        # Seeding only (no Lloyd iterations): seeds spread towards the tails, so
        # most weights share a few central values; that low-entropy assignment is
        # what makes clustered weights compress (full k-means balances the clusters).
        sample = values if values.size <= 50_000 else np.random.default_rng(seed).choice(values, 50_000)
        centroids = kmeans_plusplus(sample[:, None], k, random_state=seed)[0].ravel()
    return np.sort(centroids).astype(np.float32)
