"""`QuantizationSummaries`: each activation quantizer's range, as TensorBoard scalars."""

from __future__ import annotations

import os

from kmot.core.summaries import TransformSummaries
from kmot.quantization.quantizers import ActivationQuantizer

__all__ = ["QuantizationSummaries"]


class QuantizationSummaries(TransformSummaries):
    """Writes ``<quantizer>/range_min`` and ``range_max`` of every activation quantizer
    of a QAT model to `log_dir`: where the int8 scales are heading as training runs.

    Example:
        >>> qat.fit(x, y, callbacks=[QuantizationSummaries("logs")])  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike, update_freq: str | int = "epoch"):
        super().__init__(log_dir, update_freq=update_freq,
                         select=lambda obj: isinstance(obj, ActivationQuantizer),
                         what="quantization-aware")
