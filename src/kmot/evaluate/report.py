"""`Report`: the result of `compare`; saves as JSON, Markdown and HTML, loads back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from kmot.errors import ReportError
from kmot.evaluate.schema import (
    SCHEMA_VERSION,
    CandidateResult,
    GateCheck,
    GateRecord,
    MetricInfo,
    Registration,
    Settings,
    _Model,
    schema_extra,
)

__all__ = ["Report", "report_schema"]

FILES = {"json": "report.json", "markdown": "report.md", "html": "report.html"}


class Report(_Model):
    """Every candidate's measurements on one validation set, and how they were taken.

    Example:
        >>> report = compare({"base": "a.tflite", "int8": "b.tflite"},
        ...                  data=(x, y))                  # doctest: +SKIP
        >>> report.candidate("int8").latency.p50_ms       # doctest: +SKIP
        >>> report.save("report/")                        # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=schema_extra)

    schema_version: str = Field(SCHEMA_VERSION, pattern=r"^\d+\.\d+$")
    kmot_version: str
    created: str = Field(description="UTC time of the measurement, ISO 8601")
    environment: dict[str, str] = Field(description="machine and library versions")
    settings: Settings
    baseline: str
    primary_metric: str | None = Field(
        description="the first task metric: the one plots and accuracy budgets use")
    metrics: list[MetricInfo]
    candidates: list[CandidateResult]
    gate: GateRecord | None = Field(None, description="the verdict, when a gate ran on it")
    registrations: list[Registration] = Field(
        default_factory=list, description="candidates pushed to a registry")

    @property
    def names(self) -> list[str]:
        """Candidate names, in measurement order."""
        return [c.name for c in self.candidates]

    def candidate(self, name: str) -> CandidateResult:
        """One candidate's result by name.

        Raises:
            ReportError: no candidate has that name.
        """
        for c in self.candidates:
            if c.name == name:
                return c
        raise ReportError(
            f"Expected a candidate name in this report: {self.names}. Received: {name!r}"
        )

    def metric_info(self, name: str) -> MetricInfo | None:
        """The metric of that name, if the report has it."""
        return next((m for m in self.metrics if m.name == name), None)

    def with_gate(self, result: Any) -> Report:
        """A copy of this report that records a gate's verdict (a `GateResult`).

        Example:
            >>> report = report.with_gate(gate(report, "budgets.yaml"))  # doctest: +SKIP
        """
        from dataclasses import asdict

        checks = [GateCheck(**asdict(c)) for c in result.checks]
        return self.model_copy(update={"gate": GateRecord(passed=result.passed, checks=checks)})

    def with_registration(self, version: Any, *, candidate: str, registry: str | os.PathLike,
                          stage: str | None = None) -> Report:
        """A copy of this report that records `candidate` as a pushed registry version.

        Args:
            version: the `ModelVersion` that `Registry.push` (or `promote`) returned.
            candidate: the candidate it is.
            registry: the registry's location: its folder (recorded as an absolute
                path) or an ``mlflow://`` URI.
            stage: ``"production"`` once promoted (default: from ``version.production``).

        Raises:
            ReportError: `candidate` is not in the report.
        """
        self.candidate(candidate)
        where = str(Path(registry).resolve()) if isinstance(registry, os.PathLike) else str(registry)
        stage = stage if stage is not None else ("production" if version.production else None)
        entry = Registration(candidate=candidate, name=version.name, version=version.version,
                             sha256=version.sha256, stage=stage, registry=where)
        return self.model_copy(update={"registrations": [*self.registrations, entry]})

    def summary(self) -> list[str]:
        """Lines a reviewer reads in ten seconds: each candidate against the baseline
        (task metric in points, size, speed), then the gate's verdict and registry
        versions.

        Example:
            >>> report.summary()[0]  # doctest: +SKIP
            'qat_int8: accuracy -0.3 pt, 3.8x smaller (4.1x gzip), 2.9x faster'
        """
        from kmot.evaluate.render import summary_lines

        return summary_lines(self)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict that `report.json` holds."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        from kmot.evaluate.render import markdown

        return markdown(self)

    def to_html(self) -> str:
        """A self-contained HTML page (inline CSS and SVG plots, no network)."""
        from kmot.evaluate.render import html

        return html(self)

    def save(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Writes report.json, report.md and report.html into `directory`, atomically.

        Args:
            directory: the folder (created if missing); existing reports are replaced.

        Returns:
            The written paths, keyed "json", "markdown", "html".

        Example:
            >>> report.save("report/")["html"]  # doctest: +SKIP
            PosixPath('report/report.html')
        """
        from kmot._files import write_atomic

        folder = Path(directory)
        contents = {"json": self.to_json(), "markdown": self.to_markdown(),
                    "html": self.to_html()}
        return {key: write_atomic(folder / FILES[key], text.encode("utf-8"))
                for key, text in contents.items()}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Report:
        """Reads a report.json (or a folder holding one) and checks it against the schema.

        Args:
            path: the report.json file, or the folder `save` wrote.

        Returns:
            The `Report`, equal to the one that was saved.

        Raises:
            ReportError: missing or unreadable file, a schema version this kmot
                does not read, or content that does not match the schema.
        """
        path = Path(path)
        if path.is_dir():
            path = path / FILES["json"]
        if not path.is_file():
            raise ReportError(
                f"No such report. Expected a report.json written by Report.save or "
                f"`kmot bench`, or the folder holding it. Received: {path}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ReportError(
                f"Expected a JSON report. Received: {path} that does not parse ({err})."
            ) from err
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the report") -> Report:
        """Builds a report from its JSON dict, validating it against the schema.

        Raises:
            ReportError: a schema version this kmot does not read, or content
                that does not match the schema (the first error's path is named).
        """
        import jsonschema

        version = data.get("schema_version") if isinstance(data, dict) else None
        ours = SCHEMA_VERSION.split(".")
        theirs = str(version).split(".")
        if len(theirs) != 2 or theirs[0] != ours[0] or int(theirs[1]) > int(ours[1]):
            raise ReportError(
                f"This kmot reads report schema {ours[0]}.0 to {SCHEMA_VERSION}. "
                f"Received: schema_version={version!r} in {source}. Evaluate again "
                "with this kmot, or install the kmot version that wrote it."
            )
        errors = sorted(jsonschema.Draft202012Validator(report_schema()).iter_errors(data),
                        key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
            raise ReportError(
                f"{source} does not match the kmot report schema {SCHEMA_VERSION}: "
                f"{len(errors)} error(s). Expected valid values at every field. "
                f"Received: at {where}: {errors[0].message}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as err:  # only reachable if schema and model disagree
            raise ReportError(f"{source} does not match the report model. Received: {err}") from err

    def tables(self) -> list[Any]:
        """Two rich Tables (quality, then cost), narrow enough for a terminal."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        from kmot.evaluate.render import summary_rows

        out = []
        titles = {"quality": f"quality on {self.settings.num_samples} samples vs baseline "
                             f"{self.baseline!r}",
                  "cost": f"latency in ms ({self.settings.runs} runs, batch "
                          f"{self.settings.batch_size}, {self.settings.threads} thread(s)), "
                          "net peak memory, size, ops int/float/fallback"}
        for part, title in titles.items():
            headers, rows = summary_rows(self, part)
            # Names come from users and reports: plain text, never markup.
            table = Table(title=Text(title), caption="* baseline", box=box.SIMPLE_HEAVY,
                          pad_edge=False)
            for i, h in enumerate(headers):
                table.add_column(_SHORT.get(h, h), justify="left" if i == 0 else "right",
                                 no_wrap=i == 0)
            for row in rows:
                table.add_row(*(Text(str(cell)) for cell in
                                (row[0].replace(" (baseline)", "*"), *row[1:])))
            out.append(table)
        return out

    def print_table(self, console: Any = None) -> None:
        """Prints the summary tables, the one-line summaries and any notes to a rich console."""
        from rich.console import Console
        from rich.text import Text

        console = console or Console()
        for table in self.tables():
            console.print(table)
        for line in self.summary():
            console.print(Text(line))  # wrapped at the console's width
        for c in self.candidates:
            for note in c.notes:
                console.print(Text.assemble(("note", "yellow"), f" {c.name}: {note}"), soft_wrap=True)


# Terminal headers: two tables must fit 80 columns.
_SHORT = {"p50 ms": "p50", "p90 ms": "p90", "p99 ms": "p99", "p50 vs base": "×base",
          "memory MB": "mem MB", "ops int/float/fallback": "ops"}


def report_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of report.json, for this `SCHEMA_VERSION`.

    It is generated from the pydantic models that write the file, so the two agree.

    Returns:
        The schema as a dict (``json.dumps`` it to publish it).

    Example:
        >>> report_schema()["properties"]["schema_version"]["default"] == SCHEMA_VERSION
        True
    """
    return Report.model_json_schema()
