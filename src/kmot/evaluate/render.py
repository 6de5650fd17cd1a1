"""Report rendering: the summary table's rows, Markdown, and self-contained HTML."""

from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from kmot.evaluate.report import Report
    from kmot.evaluate.schema import CandidateResult

__all__ = ["summary_rows", "summary_lines", "provenance_lines", "release_lines", "markdown",
           "html", "human_bytes"]


def human_bytes(n: float) -> str:
    """1234567 -> '1.23MB' (powers of 1000, like the memory figures)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n} GB"  # pragma: no cover


def _metric_cell(c: CandidateResult, name: str, baseline: str) -> str:
    value = c.metrics.get(name)
    if value is None:
        return "-"
    if c.name == baseline or name not in c.metric_deltas:
        return f"{value:.4f}"
    return f"{value:.4f} ({c.metric_deltas[name]:+.4f})"


def _ops_cell(c: CandidateResult) -> str:
    if c.ops is None:
        return "-"
    return f"{c.ops.int8 + c.ops.int16}/{c.ops.float}/{c.ops.fallback}"


def summary_rows(report: Report, part: str = "all") -> tuple[list[str], list[list[str]]]:
    """Headers and string rows of the summary table shared by every renderer.

    `part` is "quality" (metrics, fidelity), "cost" (latency, memory, size, ops)
    or "all"; the terminal prints the two halves as two tables to fit its width.
    """
    quality = [*[m.name for m in report.metrics], "agreement", "KL"]
    cost = ["p50 ms", "p90 ms", "p99 ms", "p50 vs base", "memory MB", "size", "gzip",
            "ops int/float/fallback"]
    headers = ["candidate", "kind", *quality, *cost]
    rows = []
    for c in report.candidates:
        f = c.fidelity
        rows.append([
            c.name + (" (baseline)" if c.name == report.baseline else ""),
            c.kind,
            *[_metric_cell(c, m.name, report.baseline) for m in report.metrics],
            "-" if f is None or f.argmax_agreement is None else f"{f.argmax_agreement:.2%}",
            "-" if f is None or f.kl_divergence is None else f"{f.kl_divergence:.2g}",
            f"{c.latency.p50_ms:.3f}", f"{c.latency.p90_ms:.3f}", f"{c.latency.p99_ms:.3f}",
            f"{c.latency_ratio:.3g}x",
            "-" if c.memory is None else f"{c.memory.net_mb:.1f}",
            human_bytes(c.size.bytes), human_bytes(c.size.gzip_bytes), _ops_cell(c),
        ])
    if part == "all":
        return headers, rows
    keep = [0] + [i for i, h in enumerate(headers) if h in (quality if part == "quality" else cost)]
    if part == "quality":
        keep.insert(1, 1)  # the kind
    return [headers[i] for i in keep], [[row[i] for i in keep] for row in rows]


def _ratio(before: float, after: float, better: str, worse: str) -> str:
    """``3.7x smaller`` when after < before, ``1.2x larger`` when not."""
    if after <= 0 or before <= 0:
        return "-"
    r = before / after
    return f"{r:.1f}x {better}" if r >= 1 else f"{1 / r:.1f}x {worse}"


def _delta_text(report: Report, c: CandidateResult) -> str | None:
    name = report.primary_metric
    if name is None or name not in c.metric_deltas:
        return None
    base = report.candidate(report.baseline).metrics[name]
    delta = c.metric_deltas[name]
    if 0 <= base <= 1 and 0 <= c.metrics[name] <= 1:  # a fraction: read in points
        profile = c.error_profile
        if name == "accuracy" and profile is not None and profile.delta_ci95 is not None:
            low, high = profile.delta_ci95
            return f"{name} {100 * delta:+.1f} pt (95% CI {100 * low:+.1f} to {100 * high:+.1f})"
        return f"{name} {100 * delta:+.1f} pt"
    return f"{name} {delta:+.4g}"


def summary_lines(report: Report) -> list[str]:
    """Each candidate against the baseline in one line, then the gate and registry."""
    base = report.candidate(report.baseline)
    lines = []
    for c in report.candidates:
        if c.name == report.baseline:
            continue
        size = _ratio(base.size.bytes, c.size.bytes, "smaller", "larger")
        gzip = _ratio(base.size.gzip_bytes, c.size.gzip_bytes, "smaller", "larger")
        parts = [_delta_text(report, c), size, f"gzip {gzip}",
                 _ratio(base.latency.p50_ms, c.latency.p50_ms, "faster", "slower")]
        if c.memory is not None and base.memory is not None:
            parts.append(f"memory {c.memory.net_mb:.1f} MB (baseline {base.memory.net_mb:.1f})")
        lines.append(f"{c.name}: " + ", ".join(p for p in parts if p))
    return lines + release_lines(report)


def release_lines(report: Report) -> list[str]:
    """The gate's verdict and the registry versions, one line each."""
    lines = []
    if report.gate is not None:
        g = report.gate
        passed = sum(c.passed for c in g.checks)
        names = sorted({c.candidate for c in g.checks})
        line = (f"gate: {'PASSED' if g.passed else 'FAILED'}, {passed} of {len(g.checks)} "
                f"checks pass ({', '.join(names)})")
        failed = [f"{c.candidate} {c.budget}: {c.detail}" for c in g.checks if not c.passed]
        lines.append(line + ("; " + "; ".join(failed) if failed else ""))
    for r in report.registrations:
        lines.append(f"registry: {r.candidate} is {r.name} v{r.version}"
                     + (f" ({r.stage})" if r.stage else "")
                     + f", sha256 {r.sha256[:12]}, in {r.registry}")
    return lines


def profile_rows(report: Report) -> list[list[str]]:
    """One row per profiled candidate: the accuracy delta, its interval, McNemar's p,
    and the samples that changed (fixed / broken, the first indices)."""
    rows = []
    for c in report.candidates:
        p = c.error_profile
        if p is None or p.kind != "classification":
            continue
        low, high = p.delta_ci95 or (float("nan"), float("nan"))
        first = ", ".join(map(str, p.changed[:12])) + (" ..." if len(p.changed) > 12 else "")
        rows.append([c.name, f"{100 * p.accuracy_delta:+.2f}",
                     f"{100 * low:+.2f} to {100 * high:+.2f}", f"{p.mcnemar_p:.3g}",
                     f"{len(p.changed)} ({len(p.fixed)} fixed, {len(p.broken)} broken)",
                     first or "-"])
    return rows


PROFILE_HEADERS = ["candidate", "accuracy delta (pt)", "95% interval (pt)", "McNemar p",
                   "changed predictions", "changed samples"]


def _step_text(step) -> str:
    options = ", ".join(f"{k}={v}" for k, v in step.options.items())
    return f"{step.technique}({options})" if options else step.technique


def provenance_lines(report: Report) -> list[tuple[str, str]]:
    """``(candidate, how it was made)`` for every candidate whose provenance is known."""
    out = []
    for c in report.candidates:
        p = c.provenance
        if p is None:
            continue
        chain = [_step_text(s) for s in p.steps]
        if p.export:
            chain.append(f"export {p.export}")
        parts = [" → ".join(chain) or "as given"]
        if p.recipe:
            parts.append(f"recipe {p.recipe}"
                         + (f" (sha256 {p.recipe_sha256[:12]})" if p.recipe_sha256 else ""))
        if p.source or p.source_sha256:
            parts.append("from " + " ".join(
                x for x in (p.source, p.source_sha256 and f"sha256 {p.source_sha256[:12]}") if x))
        out.append((c.name, "; ".join(parts)))
    return out


def _settings_line(report: Report) -> str:
    s = report.settings
    return (f"{s.num_samples} validation samples; latency: {s.runs} runs after {s.warmup} "
            f"warm-up, batch {s.batch_size}, {s.threads} thread(s); peak memory "
            f"{'net of an idle process' if s.memory else 'not measured'}. "
            f"Created {report.created} with kmot {report.kmot_version}.{_remote_text(s)}")


def _remote_text(s) -> str:
    """Which figures came from which machine, when some came from a remote."""
    if s.remote is None:
        return ""
    env = s.remote.environment
    machine = ", ".join(f"{k} {env[k]}" for k in ("cpu", "cpu_count", "machine", "platform",
                                                 "python", "ai-edge-litert") if k in env)
    return (f" {' and '.join(s.remote.measured).capitalize()} measured on "
            f"{s.remote.target} ({machine}); metrics, fidelity, size and ops on this machine.")


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`|[]"})


def _md(text: str) -> str:
    """``text`` shown as itself in Markdown: names, ops and notes come from users and
    files, and Markdown renders raw HTML (``<script>``) and links (``[x](...)``)."""
    one_line = " ".join(text.splitlines())  # a line break would end a table row
    return _html.escape(one_line, quote=False).translate(_MD_SPECIAL)


def markdown(report: Report) -> str:
    """The report as Markdown: settings, the summary table, op fallbacks, notes.

    Every string from the report is escaped (see `_md`), so a candidate named
    ``<script>`` is shown, not run, by a Markdown viewer.
    """
    headers, rows = summary_rows(report)
    summary = [f"- {_md(line)}" for line in summary_lines(report)]
    lines = [f"# kmot evaluation: {len(report.candidates)} candidate(s), baseline "
             + _md(report.baseline), "", *summary, *([""] if summary else []),
             _md(_settings_line(report)), "",
             "| " + " | ".join(map(_md, headers)) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(map(_md, row)) + " |" for row in rows]
    lines += ["", "Deltas in parentheses are vs the baseline. Agreement: argmax agreement "
              "with the baseline; KL: KL(baseline || candidate). Memory: peak RSS of a "
              "process running the model minus an idle one."]
    made = provenance_lines(report)
    if made:
        lines += ["", "## How each candidate was made", ""] + [f"- {_md(n)}: {_md(t)}"
                                                             for n, t in made]
    profiles = profile_rows(report)
    if profiles:
        lines += ["", "## Error profile", "",
                  "| " + " | ".join(PROFILE_HEADERS) + " |",
                  "|" + "|".join(["---"] + ["---:"] * 4 + ["---"]) + "|"]
        lines += ["| " + " | ".join(map(_md, row)) + " |" for row in profiles]
    if report.gate is not None:
        lines += ["", "## Gate", "", "| candidate | budget | value | limit | verdict |",
                  "|---|---|---:|---:|---|"]
        lines += [f"| {_md(c.candidate)} | {_md(c.budget)} | "
                  f"{'not measured' if c.value is None else f'{c.value:.6g}'} | {c.limit:.6g} | "
                  f"{'pass' if c.passed else 'FAIL'} |" for c in report.gate.checks]
    extra = [(c.name, op) for c in report.candidates if c.ops for op in c.ops.fallback_ops]
    if extra:
        lines += ["", "## Float fallback ops", ""] + [f"- {_md(n)}: {_md(op)}" for n, op in extra]
    notes = [(c.name, n) for c in report.candidates for n in c.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {_md(n)}: {_md(text)}" for n, text in notes]
    lines += ["", "Environment: " + _md(", ".join(f"{k} {v}" for k, v in
                                                 sorted(report.environment.items())))]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328}
table{border-collapse:collapse;font-size:.9rem;margin:1rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f6f8fa;white-space:normal}
.scroll{overflow-x:auto}
.plots{display:flex;flex-wrap:wrap;gap:1.5rem}
figure{margin:0;border:1px solid #d0d7de;padding:.5rem}
figure svg{width:560px;height:auto;display:block}
.meta{color:#57606a;font-size:.85rem}
.summary li{margin:.2rem 0}
.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:600}
"""


def html(report: Report) -> str:
    """The report as one HTML page with inline CSS and inline SVG plots."""
    from kmot.evaluate import plots

    esc = _html.escape
    headers, rows = summary_rows(report)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    env = ", ".join(f"{esc(k)} {esc(v)}" for k, v in sorted(report.environment.items()))
    figures = "".join(
        f'<figure id="{fid}"><figcaption>{esc(caption)}</figcaption>{svg}</figure>'
        for fid, caption, svg in (
            ("plot-accuracy-size", "Task metric vs compressed size", plots.metric_vs_size(report)),
            ("plot-latency", "Latency distribution", plots.latency_distribution(report)),
        ))
    fallbacks = "".join(f"<li>{esc(c.name)}: {esc(op)}</li>" for c in report.candidates
                        if c.ops for op in c.ops.fallback_ops)
    notes = "".join(f"<li>{esc(c.name)}: {esc(n)}</li>" for c in report.candidates for n in c.notes)
    summary = "".join(f"<li>{esc(line)}</li>" for line in summary_lines(report))
    made = "".join(f"<li><b>{esc(n)}</b>: {esc(t)}</li>" for n, t in provenance_lines(report))
    gate = ""
    if report.gate is not None:
        verdict = ("pass", "PASSED") if report.gate.passed else ("fail", "FAILED")
        gate_rows = "".join(
            f"<tr><td>{esc(c.candidate)}</td><td>{esc(c.budget)}</td>"
            f"<td>{'not measured' if c.value is None else f'{c.value:.6g}'}</td>"
            f"<td>{c.limit:.6g}</td><td class=\"{'pass' if c.passed else 'fail'}\">"
            f"{'pass' if c.passed else 'FAIL'}</td></tr>" for c in report.gate.checks)
        gate = (f"<h2 id=\"gate\">Gate: <span class=\"{verdict[0]}\">{verdict[1]}</span></h2>"
                "<table><thead><tr><th>candidate</th><th>budget</th><th>value</th><th>limit</th>"
                f"<th>verdict</th></tr></thead><tbody>{gate_rows}</tbody></table>")
    profiles = profile_rows(report)
    profile = ""
    if profiles:
        head_p = "".join(f"<th>{esc(h)}</th>" for h in PROFILE_HEADERS)
        body_p = "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in row) + "</tr>"
                         for row in profiles)
        bars = plots.per_class_deltas(report)
        profile = ("<h2 id=\"error-profile\">Error profile</h2>"
                   f"<div class=\"scroll\"><table><thead><tr>{head_p}</tr></thead>"
                   f"<tbody>{body_p}</tbody></table></div>"
                   "<p class=\"meta\">The interval is a paired bootstrap (2000 resamples) of "
                   "the accuracy delta; McNemar's exact test asks whether the fixed and broken "
                   "counts differ by more than chance.</p>"
                   + (f'<figure id="plot-per-class"><figcaption>Accuracy per class vs the '
                      f'baseline</figcaption>{bars}</figure>' if bars else ""))
    registry = "".join(
        f"<li>{esc(r.candidate)}: <b>{esc(r.name)} v{r.version}</b>"
        f"{esc(f' ({r.stage})') if r.stage else ''}, sha256 <code>{esc(r.sha256)}</code>, in "
        f"{esc(r.registry)}</li>" for r in report.registrations)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>kmot evaluation: baseline {esc(report.baseline)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>kmot evaluation</h1>"
        + (f"<ul class=\"summary\" id=\"summary-lines\">{summary}</ul>" if summary else "")
        + f"<p class=\"meta\">{esc(_settings_line(report))}</p>"
        f"<div class=\"scroll\"><table id=\"summary\"><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
        "<p class=\"meta\">Deltas in parentheses are vs the baseline. Agreement: argmax "
        "agreement with the baseline; KL: KL(baseline || candidate). Memory: peak RSS of a "
        "process running the model minus an idle one. Ops: integer / float / float "
        "fallbacks inside a quantized graph.</p>"
        f"<div class=\"plots\">{figures}</div>"
        + profile
        + (f"<h2 id=\"provenance\">How each candidate was made</h2><ul>{made}</ul>" if made else "")
        + gate
        + (f"<h2 id=\"registry\">Registry</h2><ul>{registry}</ul>" if registry else "")
        + (f"<h2>Float fallback ops</h2><ul>{fallbacks}</ul>" if fallbacks else "")
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + f"<p class=\"meta\">Environment: {env}. Schema {esc(report.schema_version)}.</p>"
        "</body></html>\n"
    )
