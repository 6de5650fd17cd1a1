"""The report as a release record: how each candidate was made, the gate's verdict,
the registry version, and the ten-second summary at the top."""

import json

import pytest

from kmot.errors import EvaluationError, ReportError
from kmot.evaluate import Provenance, Report, compare, gate
from kmot.registry import Registry

MADE = {"int8": {"steps": [{"technique": "quantize_model"},
                           {"technique": "fine-tune", "options": {"epochs": 2}}],
                 "export": "int8", "source": "model.keras", "source_sha256": "ab" * 32}}


@pytest.fixture(scope="module")
def recorded(files, val):
    return compare({"float": files / "float.tflite", "int8": files / "int8.tflite"}, val,
                   baseline="float", runs=5, warmup=1, memory=False, provenance=MADE)


def test_provenance_is_kept_and_round_trips(recorded, tmp_path):
    made = recorded.candidate("int8").provenance
    assert made == Provenance.model_validate(MADE["int8"])
    assert [s.technique for s in made.steps] == ["quantize_model", "fine-tune"]
    assert recorded.candidate("float").provenance is None
    recorded.save(tmp_path)
    assert Report.load(tmp_path) == recorded
    text = recorded.to_markdown()
    assert "## How each candidate was made" in text
    assert "- int8: quantize_model → fine-tune(epochs=2) → export int8; from model.keras " \
           "sha256 abababababab" in text


@pytest.mark.parametrize("provenance, words", [
    ({"fp16": {}}, r"provenance keys to name candidates: \['float', 'int8'\]. Received: 'fp16'"),
    ({"int8": {"steps": [{"options": {}}]}}, r"Received: at steps.0.technique: Field required"),
    ({"int8": {"recipie": "x"}}, r"Received: at recipie: Extra inputs are not permitted"),
    (["int8"], r"Expected provenance to be a dict .* Received: list"),
])
def test_bad_provenance_is_refused_before_measuring(files, val, provenance, words):
    with pytest.raises(EvaluationError, match=words):
        compare({"float": files / "float.tflite", "int8": files / "int8.tflite"}, val,
                runs=1, warmup=0, memory=False, provenance=provenance)


def test_gate_verdict_and_registration_are_recorded(recorded, files, tmp_path):
    verdict = gate(recorded, {"max_accuracy_drop": 0.5, "max_p50_ms": 1e-9}, candidate="int8")
    assert not verdict.passed
    gated = recorded.with_gate(verdict)
    assert gated.gate.passed is False and recorded.gate is None  # a copy, not a change
    assert [(c.budget, c.passed) for c in gated.gate.checks] == [
        ("max_accuracy_drop", True), ("max_p50_ms", False)]

    registry = Registry(tmp_path / "registry")
    version = registry.promote("digits", registry.push(files / "int8.tflite",
                                                       name="digits").version)
    pushed = gated.with_registration(version, candidate="int8", registry=registry.root)
    (entry,) = pushed.registrations
    assert (entry.name, entry.version, entry.stage, entry.sha256) == (
        "digits", 1, "production", version.sha256)
    saved = json.loads(pushed.to_json())
    assert saved["gate"]["passed"] is False and saved["registrations"][0]["version"] == 1
    assert Report.from_dict(saved) == pushed
    with pytest.raises(ReportError, match="Received: 'fp16'"):
        gated.with_registration(version, candidate="fp16", registry="r")

    lines = pushed.summary()
    assert lines[0].startswith("int8: accuracy ") and " pt (95% CI " in lines[0]
    assert lines[1].startswith("gate: FAILED, 1 of 2 checks pass (int8); int8 max_p50_ms: ")
    assert lines[2].startswith(f"registry: int8 is digits v1 (production), sha256 "
                               f"{version.sha256[:12]}, in {registry.root}")
    page = pushed.to_html()
    assert '<h2 id="gate">Gate: <span class="fail">FAILED</span></h2>' in page
    assert f"<code>{version.sha256}</code>" in page and 'id="summary-lines"' in page
    text = pushed.to_markdown()
    assert "| int8 | max_p50_ms |" in text and "FAIL |" in text


def test_summary_reads_size_speed_and_points(recorded):
    base, int8 = recorded.candidate("float"), recorded.candidate("int8")
    (line,) = recorded.summary()
    size = base.size.bytes / int8.size.bytes
    assert f"{size:.1f}x smaller" in line and size > 2  # int8 weights (a tiny model: overhead weighs)
    speed = base.latency.p50_ms / int8.latency.p50_ms
    assert (f"{speed:.1f}x faster" if speed >= 1 else f"{1 / speed:.1f}x slower") in line
    assert f"accuracy {100 * int8.metric_deltas['accuracy']:+.1f} pt" in line


def test_a_schema_1_0_report_still_loads(recorded):
    old = recorded.to_dict() | {"schema_version": "1.0"}
    del old["gate"], old["registrations"]
    for c in old["candidates"]:
        del c["provenance"]
    loaded = Report.from_dict(old)
    assert loaded.gate is None and loaded.registrations == []
