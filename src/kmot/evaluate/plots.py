"""The report's plots as inline SVG (matplotlib, loaded on first use, without pyplot)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from kmot.evaluate.report import Report

__all__ = ["metric_vs_size", "latency_distribution", "per_class_deltas"]

_BASE, _OTHER = "#cf222e", "#0969da"


def _svg(fig: Any, salt: str) -> str:
    """The figure as an <svg> element: no XML prolog, text kept as text.

    A distinct hash salt per plot keeps element ids unique within one page.
    """
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight",  # no RDF metadata block
                    metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure() -> tuple[Any, Any]:
    # A bare Figure, not pyplot: no global backend switch, no figure to close.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    return fig, fig.subplots()


def _log_x(ax: Any) -> None:
    """A log x axis labelled in plain numbers at 1, 2 and 5 per decade (minor ticks
    unlabelled: their 3x10^-3 labels overlap)."""
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.xaxis.set_major_formatter(formatter)
    ax.xaxis.set_minor_formatter("")


def _legend() -> list[Any]:
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker="*", color=_BASE, linestyle="", markersize=9, label="baseline"),
            Line2D([], [], marker="o", color=_OTHER, linestyle="", label="candidate")]


def metric_vs_size(report: Report) -> str:
    """Scatter: the primary metric (else argmax agreement) against gzip bytes."""
    fig, ax = _figure()
    metric = report.primary_metric
    label = metric or "argmax agreement with the baseline"
    for c in report.candidates:
        if metric:
            y = c.metrics.get(metric)
        else:
            y = 1.0 if c.fidelity is None else c.fidelity.argmax_agreement
        if y is None:
            continue
        is_base = c.name == report.baseline
        ax.scatter(c.size.gzip_bytes / 1e3, y, s=60, marker="*" if is_base else "o",
                   color=_BASE if is_base else _OTHER, zorder=3)
        ax.annotate(c.name, (c.size.gzip_bytes / 1e3, y), textcoords="offset points",
                    xytext=(6, 4), fontsize=9)
    sizes = [c.size.gzip_bytes for c in report.candidates]
    log = max(sizes) > 10 * min(sizes)  # a log axis only when sizes span a decade
    if log:
        _log_x(ax)
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("size, gzip -9 (kB" + (", log scale)" if log else ")"))
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=_legend(), loc="best", fontsize=8)
    return _svg(fig, "kmot-metric-vs-size")


def latency_distribution(report: Report) -> str:
    """Box plot per candidate of every timed run (ms), baseline first."""
    fig, ax = _figure()
    ordered = sorted(report.candidates, key=lambda c: c.name != report.baseline)
    parts = ax.boxplot([c.latency.samples_ms for c in ordered], vert=False, whis=(1, 99),
                       showfliers=True, patch_artist=True,
                       tick_labels=[c.name for c in ordered])
    for patch, c in zip(parts["boxes"], ordered):
        patch.set_facecolor(_BASE if c.name == report.baseline else _OTHER)
        patch.set_alpha(0.35)
    ax.invert_yaxis()
    low = min(min(c.latency.samples_ms) for c in ordered)
    if max(max(c.latency.samples_ms) for c in ordered) > 20 * max(low, 1e-9):
        _log_x(ax)  # a Keras run next to an int8 file: show both
    ax.set_xlabel(f"latency per invocation, ms ({report.settings.runs} runs, "
                  f"batch {report.settings.batch_size}; whiskers p1-p99)")
    ax.grid(True, axis="x", alpha=0.3)
    return _svg(fig, "kmot-latency")


def per_class_deltas(report: Report, *, most: int = 20) -> str | None:
    """Bars: each candidate's accuracy delta per class, in points (the `most` classes
    that moved most when there are more). None when no candidate has a class profile."""
    import numpy as np

    profiled = [c for c in report.candidates
                if c.error_profile is not None and c.error_profile.per_class]
    if not profiled:
        return None
    labels = sorted({d.label for c in profiled for d in c.error_profile.per_class})
    deltas = np.array([[next((100 * d.delta for d in c.error_profile.per_class
                              if d.label == label), 0.0) for label in labels]
                       for c in profiled])
    if len(labels) > most:
        keep = np.sort(np.argsort(-np.abs(deltas).max(0))[:most])
        labels, deltas = [labels[i] for i in keep], deltas[:, keep]
    fig, ax = _figure()
    width = 0.8 / len(profiled)
    x = np.arange(len(labels))
    cmap = __import__("matplotlib").colormaps["tab10"]
    for i, c in enumerate(profiled):
        ax.bar(x + (i - (len(profiled) - 1) / 2) * width, deltas[i], width, label=c.name,
               color=cmap(i % 10))
    ax.axhline(0, color="#57606a", linewidth=0.8)
    ax.set_xticks(x, [str(label) for label in labels])
    ax.set_xlabel("class" + (f" (the {most} that moved most)" if len(labels) == most else ""))
    ax.set_ylabel("accuracy vs baseline (points)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return _svg(fig, "kmot-per-class")
