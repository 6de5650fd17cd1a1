"""`ClusteringSummaries`: distinct values per clustered weight, as TensorBoard scalars."""

from __future__ import annotations

import os

from kmot.clustering.transform import ClusterTransform
from kmot.core.summaries import TransformSummaries

__all__ = ["ClusteringSummaries"]


class ClusteringSummaries(TransformSummaries):
    """Writes ``<layer>/<weight>/distinct_values`` for every clustered weight to `log_dir`.

    Example:
        >>> clustered.fit(x, y, callbacks=[ClusteringSummaries("logs")])  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike, update_freq: str | int = "epoch"):
        super().__init__(log_dir, update_freq=update_freq,
                         select=lambda obj: isinstance(obj, ClusterTransform), what="clustering")
