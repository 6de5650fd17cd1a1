"""The report: JSON against its schema, save/load, Markdown, HTML, terminal table."""

import json
import re

import jsonschema
import pytest
from rich.console import Console

from kmot.errors import ReportError
from kmot.evaluate import SCHEMA_VERSION, Report, report_schema


def test_saved_json_validates_against_the_schema(report, tmp_path):
    paths = report.save(tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["report.html", "report.json", "report.md"]
    data = json.loads(paths["json"].read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    assert schema["$id"].endswith(SCHEMA_VERSION)
    assert not list(tmp_path.glob("out/.*.tmp"))  # atomic writes leave no temporary file


def test_schema_rejects_what_the_model_rejects(report):
    data = report.to_dict()
    data["candidates"][0]["latency"]["p50_ms"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, report_schema())
    data = report.to_dict()
    data["candidates"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, report_schema())


def test_load_round_trips(report, tmp_path):
    report.save(tmp_path)
    assert Report.load(tmp_path) == report
    assert Report.load(tmp_path / "report.json") == report


def test_load_errors(report, tmp_path):
    with pytest.raises(ReportError, match=r"No such report.*Received: .*missing"):
        Report.load(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"Expected a JSON report. Received: .*bad.json"):
        Report.load(tmp_path / "bad.json")
    newer = report.to_dict() | {"schema_version": "2.0"}
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    with pytest.raises(ReportError, match=r"reads report schema 1.0 to 1.2. Received: "
                       r"schema_version='2.0'"):
        Report.load(tmp_path / "newer.json")
    broken = report.to_dict()
    del broken["candidates"][1]["latency"]["p90_ms"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ReportError, match=r"does not match the kmot report schema 1.2: 1 "
                       r"error\(s\).*at candidates/1/latency: 'p90_ms' is a required property"):
        Report.load(tmp_path / "broken.json")


def test_candidate_lookup(report):
    assert report.candidate("int8").name == "int8"
    with pytest.raises(ReportError, match=r"Expected a candidate name in this report: "
                       r"\['float', 'int8'\]. Received: 'fp16'"):
        report.candidate("fp16")


def test_markdown(report):
    text = report.to_markdown()
    header = next(line for line in text.splitlines() if line.startswith("| candidate"))
    assert "| accuracy | top3 | agreement | KL | p50 ms |" in header
    assert "| float (baseline) | tflite |" in text and "| int8 | tflite |" in text
    lines = text.splitlines()
    start = lines.index(header)
    rows = lines[start:lines.index("", start)]
    assert len(rows) == 2 + len(report.candidates)
    assert len({row.count("|") for row in rows}) == 1  # every row has every column


def test_html_is_self_contained(report):
    page = report.to_html()
    assert page.count("<svg") == 3 and 'id="plot-accuracy-size"' in page
    assert 'id="plot-per-class"' in page
    assert 'id="plot-latency"' in page
    # Nothing to fetch: no scripts, stylesheets or images by URL; links are in-page only.
    assert not re.search(r"<script|<link|url\((?!#)", page)
    references = re.findall(r"(?:src|href)\s*=\s*[\"']([^\"']*)", page)
    assert references and all(ref.startswith("#") for ref in references)


def test_terminal_tables_fit_80_columns(report):
    console = Console(width=80, record=True)
    report.print_table(console)
    text = console.export_text()
    assert "int8" in text and "float*" in text and "accuracy" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing truncated


def test_terminal_tables_print_names_and_notes_as_plain_text(report):
    """A candidate named with rich markup prints literally on a default console."""
    last = report.candidates[-1].model_copy(update={"name": "[/]x[red]",
                                                   "notes": ["[bold]loud[/] note"]})
    marked = report.model_copy(update={"candidates": [*report.candidates[:-1], last]})
    console = Console(width=200, record=True)  # markup on, as rich's default
    marked.print_table(console)
    text = console.export_text()
    assert "[/]x[red]" in text and "[bold]loud[/] note" in text
