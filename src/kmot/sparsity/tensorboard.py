"""`PruningSummaries`: each pruned weight's sparsity, as TensorBoard scalars (tfmot's name)."""

from __future__ import annotations

import os

from kmot.core.summaries import TransformSummaries
from kmot.sparsity.transform import PruneTransform

__all__ = ["PruningSummaries"]


class PruningSummaries(TransformSummaries):
    """Writes ``<layer>/<weight>/sparsity`` for every pruned weight to `log_dir`.

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=[PruningSummaries("logs")])  # doctest: +SKIP
        >>> # tensorboard --logdir logs
    """

    def __init__(self, log_dir: str | os.PathLike, update_freq: str | int = "epoch"):
        super().__init__(log_dir, update_freq=update_freq,
                         select=lambda obj: isinstance(obj, PruneTransform), what="pruning")
