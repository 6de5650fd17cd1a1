"""The search's HTML report: kmot.evaluate's report of every candidate, gated, with a
search section on top (the accuracy vs size front, and which budget ruled out each)."""

from __future__ import annotations

import html as _html
from pathlib import Path
from typing import Any

from kmot.search.results import SearchResult, closest, front

__all__ = ["merged_report", "save_report"]


def merged_report(reports: dict[str, Any], budgets: Any) -> Any:
    """One `Report` holding the baseline and every candidate (each measured beside the
    baseline in its own `compare`), gated against the budgets."""
    from kmot.evaluate import gate

    first = next(iter(reports.values()))
    rows = [first.candidate("baseline")] + [r.candidate(n) for n, r in reports.items()]
    report = first.model_copy(update={"candidates": rows})
    return report.with_gate(gate(report, budgets)) if len(rows) > 1 else report


def _front_svg(result: SearchResult, budgets: Any) -> str:
    from kmot.evaluate.plots import _figure, _svg

    fig, ax = _figure()
    on_front = set(front(result.candidates))
    for e in result.candidates:
        m = e["metrics"]
        ax.scatter(m["gzip_bytes"] / 1e3, m["accuracy"], s=70 if e["name"] == result.chosen else 40,
                   marker="*" if e["name"] == result.chosen else "o",
                   color="#1a7f37" if e["meets_budgets"] else "#8c959f", zorder=3)
        if e["name"] in on_front or e["name"] == result.chosen:
            ax.annotate(e["name"], (m["gzip_bytes"] / 1e3, m["accuracy"]), fontsize=8,
                        textcoords="offset points", xytext=(5, 3))
    pts = sorted((result.candidate(n)["metrics"]["gzip_bytes"] / 1e3,
                  result.candidate(n)["metrics"]["accuracy"]) for n in on_front)
    if pts:
        ax.plot(*zip(*pts), color="#0969da", linewidth=1, drawstyle="steps-post",
                label="front")
    base = result.baseline.get("metrics", {})
    if budgets.max_gzip_bytes:
        ax.axvline(budgets.max_gzip_bytes / 1e3, color="#cf222e", linestyle="--",
                   linewidth=0.8, label="max_gzip_bytes")
    floor = []
    if budgets.max_accuracy_drop is not None and base.get("accuracy") is not None:
        floor.append(base["accuracy"] - budgets.max_accuracy_drop)
    if budgets.min_accuracy is not None:
        floor.append(budgets.min_accuracy)
    if floor:
        ax.axhline(max(floor), color="#cf222e", linestyle=":", linewidth=0.8,
                   label="accuracy budget")
    ax.set_xlabel("size, gzip -9 (kB)")
    ax.set_ylabel("accuracy (LiteRT, validation)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.1)
    ax.legend(fontsize=8, loc="best")
    return _svg(fig, "kmot-search-front")


def _section(result: SearchResult, budgets: Any) -> str:
    esc = _html.escape
    on_front, near = set(front(result.candidates)), closest(result.candidates)
    rows = []
    for e in result.candidates:
        m = e["metrics"]
        verdict = ("pass", "meets every budget") if e["meets_budgets"] else (
            "fail", "ruled out by " + ", ".join(e["ruled_out_by"]))
        rows.append(
            f"<tr><td>{esc(e['name'])}{' (chosen)' if e['name'] == result.chosen else ''}</td>"
            f"<td>{esc(e['stage'])}</td><td>{'yes' if e['trained'] else 'no'}</td>"
            f"<td>{m['accuracy']:.4f}</td><td>{m['p50_ms']:.3f}</td><td>{m['gzip_bytes']:,}</td>"
            f"<td>{'yes' if e['name'] in on_front else ''}</td>"
            f"<td class=\"{verdict[0]}\">{esc(verdict[1])}</td></tr>")
    pruned = sum(t["state"] == "PRUNED" for t in result.trials)
    if result.chosen:
        head = f"Chosen: <b>{esc(result.chosen)}</b> (the least invasive stage that meets every budget)."
    else:
        head = ("No candidate meets every budget. Closest: "
                + ", ".join(esc(n) for n in near) + ".")
    limits = ", ".join(f"{esc(k)} {v:g}" for k, v in budgets.limits().items())
    return (
        "<h2 id=\"search\">Search</h2>"
        f"<p>{head} Budgets: {limits}. {len(result.candidates)} candidate(s) measured, "
        f"{len(result.trials)} search trial(s) ({pruned} stopped early).</p>"
        "<div class=\"scroll\"><table id=\"search-candidates\"><thead><tr><th>candidate</th>"
        "<th>stage</th><th>trained</th><th>accuracy</th><th>p50 ms</th><th>gzip bytes</th>"
        "<th>on the front</th><th>verdict</th></tr></thead><tbody>" + "".join(rows)
        + "</tbody></table></div>"
        f"<figure id=\"plot-search-front\"><figcaption>Accuracy vs size: the front, the "
        f"budgets (green: meets every budget)</figcaption>{_front_svg(result, budgets)}</figure>")


def save_report(result: SearchResult, reports: dict[str, Any], budgets: Any) -> Path | None:
    """Writes ``DIR/report/`` (report.json, .md, and .html with the search section)."""
    from kmot._files import write_atomic

    if not reports:
        return None
    report = merged_report(reports, budgets)
    folder = result.out / "report"
    paths = report.save(folder)
    page = report.to_html().replace("<h1>kmot evaluation</h1>",
                                    "<h1>kmot search</h1>" + _section(result, budgets), 1)
    write_atomic(paths["html"], page.encode("utf-8"))
    return paths["html"]
