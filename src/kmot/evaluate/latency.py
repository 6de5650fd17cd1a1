"""Latency statistics of timed runs."""

from __future__ import annotations

import numpy as np

from kmot.evaluate.schema import LatencyStats

__all__ = ["summarize"]


def summarize(times_ms: np.ndarray) -> LatencyStats:
    """Percentiles (linear interpolation), mean and sample std of timings in ms.

    Example:
        >>> summarize(np.array([1.0, 2.0, 3.0])).p50_ms
        2.0
    """
    t = np.asarray(times_ms, np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return LatencyStats(
        p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99),
        mean_ms=float(t.mean()), std_ms=float(t.std(ddof=1)) if t.size > 1 else 0.0,
        min_ms=float(t.min()), max_ms=float(t.max()),
        # 1 ns: below perf_counter's noise even for microsecond models; keeps JSON short.
        samples_ms=[round(float(v), 6) for v in t],
    )
