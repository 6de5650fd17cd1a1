"""The search's progress display: the candidate or trial running, its epoch, the best so far.

A rich live line on stderr (only on a terminal unless asked), and one printed line
per measured candidate, so the log of a long search reads as a table.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Display"]


class Display:
    def __init__(self, enabled: bool | None) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, markup=False, highlight=False)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), console=self.console, transient=True,
                                 disable=not self.enabled)
        self.task = self.progress.add_task("starting", total=None)
        self.what = ""
        self.best = "best so far: none meets the budgets"

    def __enter__(self) -> Display:  # noqa: PYI034
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _show(self, extra: str = "") -> None:
        self.progress.update(self.task, description=" · ".join(
            p for p in (self.what, extra, self.best) if p))

    def candidate(self, what: str) -> None:
        self.what = what
        self._show("building")

    def epoch(self, epoch: int, total: int, accuracy: float) -> None:
        self._show(f"epoch {epoch}/{total}, val accuracy {accuracy:.4f}")

    def measuring(self) -> None:
        self._show("measuring")

    def done(self, entry: dict[str, Any], best: dict[str, Any] | None) -> None:
        from rich.text import Text

        m = entry["metrics"]
        verdict = (("meets every budget", "green") if entry["meets_budgets"] else
                   ("ruled out by " + ", ".join(entry["ruled_out_by"]), "red"))
        if self.enabled:
            self.console.print(Text.assemble(
                f"{entry['name']:<28} accuracy {m['accuracy']:.4f}  p50 {m['p50_ms']:.3f} ms  "
                f"gzip {m['gzip_bytes']:>9,} B  ", verdict))
        if best is not None:
            self.best = (f"best so far: {best['name']} ({best['metrics']['accuracy']:.4f}, "
                         f"{best['metrics']['gzip_bytes']:,} B gzip)")
        self._show()

    def note(self, text: str) -> None:
        from rich.text import Text

        if self.enabled:
            self.console.print(Text(text, style="yellow"))
