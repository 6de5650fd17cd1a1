"""The `kmot` command line, run in-process on real models and files."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from kmot.cli import app
from kmot.export import inspect

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_conv_bn_dense, digits_data):
    folder = tmp_path_factory.mktemp("cli")
    model_path = folder / "model.keras"
    trained_conv_bn_dense.save(model_path)
    np.savez(folder / "calib.npz", x=digits_data[0][:100])
    np.savez(folder / "bad.npz", a=np.zeros((3, 5)), b=np.zeros((3, 5)))
    return folder


def test_convert_int8_then_inspect(files):
    out = files / "model_int8.tflite"
    result = runner.invoke(app, ["convert", str(files / "model.keras"), "-o", str(out),
                                 "--quantize", "int8", "--calibration", str(files / "calib.npz")])
    assert result.exit_code == 0, result.output
    assert "float compute ops: 0" in result.output
    assert inspect(out).is_quantized
    shown = runner.invoke(app, ["inspect", str(out), "--json"])
    assert shown.exit_code == 0
    data = json.loads(shown.output)
    assert data["size_bytes"] == out.stat().st_size


def test_inspect_table(files):
    out = files / "model_float.tflite"
    assert runner.invoke(app, ["convert", str(files / "model.keras"), "-o", str(out)]).exit_code == 0
    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0
    assert "CONV_2D" in result.output and "FULLY_CONNECTED" in result.output


def test_convert_without_calibration_fails_clearly(files):
    result = runner.invoke(app, ["convert", str(files / "model.keras"), "-o", str(files / "x.tflite"),
                                 "--quantize", "int8"])
    assert result.exit_code == 2
    assert "needs representative data" in result.output
    assert not (files / "x.tflite").exists()


def test_convert_writes_onnx_and_saved_model(files):
    import onnxruntime as ort

    model = str(files / "model.keras")
    onnx_int8 = files / "model_int8.onnx"
    result = runner.invoke(app, ["convert", model, "-o", str(onnx_int8), "--quantize", "int8",
                                 "--calibration", str(files / "calib.npz")])
    assert result.exit_code == 0, result.output
    assert "onnx" in result.output and f"{onnx_int8.stat().st_size:,} bytes" in result.output
    session = ort.InferenceSession(str(onnx_int8), providers=["CPUExecutionProvider"])
    assert any(node.op_type == "QuantizeLinear" for node in
               __import__("onnx").load(str(onnx_int8)).graph.node)
    (out,) = session.run(None, {session.get_inputs()[0].name:
                                np.load(files / "calib.npz")["x"][:4].astype("float32")})
    assert out.shape == (4, 10)

    folder = files / "saved"
    result = runner.invoke(app, ["convert", model, "-o", str(folder), "--format", "saved_model"])
    assert result.exit_code == 0, result.output
    assert (folder / "saved_model.pb").is_file()


@pytest.mark.parametrize("extra, says", [
    (["--format", "tflm"], "Expected --format to be one of litert, onnx, saved_model"),
    (["--format", "saved_model", "--quantize", "int8"], "a SavedModel keeps float weights"),
    (["--format", "onnx", "--quantize", "float16"], "use --quantize dynamic or int8"),
    (["--format", "onnx", "--keep-float", "dense"], "--keep-float with --format onnx"),
    (["--format", "onnx"], "Expected -o to name an .onnx file"),
])
def test_convert_refuses_options_that_do_not_suit_the_format(files, extra, says):
    out = files / "refused.bin"
    result = runner.invoke(app, ["convert", str(files / "model.keras"), "-o", str(out), *extra])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_ambiguous_npz_is_reported(files):
    result = runner.invoke(app, ["convert", str(files / "model.keras"), "-o", str(files / "y.tflite"),
                                 "--quantize", "int8", "--calibration", str(files / "bad.npz")])
    assert result.exit_code == 2
    assert "Cannot tell which arrays of bad.npz" in result.output


def test_inspect_rejects_non_tflite(files):
    result = runner.invoke(app, ["inspect", str(files / "calib.npz")])
    assert result.exit_code == 2
    assert "error:" in result.output


def test_layer_error_names_layers(files):
    result = runner.invoke(app, ["layer-error", str(files / "model.keras"),
                                 "--calibration", str(files / "calib.npz")])
    assert result.exit_code == 0, result.output
    assert "largest SNR drops:" in result.output and "hidden" in result.output


def test_bench_against_the_registry_production_version(files, digits_data, tmp_path):
    from kmot.evaluate import Report
    from kmot.registry import Registry

    model = str(files / "model.keras")
    for name, extra in (("prod.tflite", []), ("cand.tflite", ["--quantize", "int8",
                                                            "--calibration",
                                                            str(files / "calib.npz")])):
        assert runner.invoke(app, ["convert", model, "-o", str(tmp_path / name), *extra]
                             ).exit_code == 0
    registry = Registry(tmp_path / "registry")
    registry.promote("digits", registry.push(tmp_path / "prod.tflite", name="digits").version)
    np.savez(tmp_path / "val.npz", x=digits_data[2][:64], y=digits_data[3][:64])
    args = ["bench", str(tmp_path / "cand.tflite"), "--data", str(tmp_path / "val.npz"),
            "--out", str(tmp_path / "report"), "--runs", "3", "--warmup", "0", "--no-memory",
            "--registry-root", str(tmp_path / "registry")]
    result = runner.invoke(app, [*args, "--baseline", "registry:digits"])
    assert result.exit_code == 0, result.output
    report = Report.load(tmp_path / "report")
    assert report.baseline == "digits v1 (production)" and report.names[1] == "cand"
    made = report.candidate("digits v1 (production)").provenance
    assert made.source_sha256 == registry.show("digits", 1).sha256
    for wrong, words in (("registry:nope", "nope"), ("registry:digits@x", "registry:NAME@VERSION"),
                         ("registry:digits@7", "7")):
        failed = runner.invoke(app, [*args, "--baseline", wrong])
        assert failed.exit_code == 2 and words in failed.output, failed.output


def test_prune_channels_writes_a_smaller_model_and_lists_groups(files, digits_data):
    import keras

    from kmot.core.cost import macs

    shown = runner.invoke(app, ["prune-channels", str(files / "model.keras"), "--groups"])
    assert shown.exit_code == 0, shown.output
    assert "prunable" in shown.output and "fixed (reaches a model output)" in shown.output
    out = files / "slim.keras"
    np.savez(files / "labelled.npz", x=digits_data[0][:64], y=digits_data[1][:64])
    result = runner.invoke(app, ["prune-channels", str(files / "model.keras"), "-o", str(out),
                                 "--sparsity", "0.5", "--importance", "taylor",
                                 "--data", str(files / "labelled.npz")])
    assert result.exit_code == 0, result.output
    before = keras.saving.load_model(files / "model.keras")
    slim = keras.saving.load_model(out)
    assert macs(slim) < 0.6 * macs(before)
    assert f"wrote {out}: {slim.count_params():,} parameters" in result.output


@pytest.mark.parametrize("args, words", [
    (["--importance", "taylor"], "Expected --data train.npz"),
    (["--sparsity", "1"], "Expected sparsity in [0, 1)"),
    (["--importance", "l3"], "Unknown importance"),
])
def test_prune_channels_errors(files, args, words):
    out = files / "never.keras"
    result = runner.invoke(app, ["prune-channels", str(files / "model.keras"), "-o", str(out),
                                 *args])
    assert result.exit_code == 2 and words in result.output, result.output
    assert not out.exists()
    wrong = runner.invoke(app, ["prune-channels", str(files / "model.keras"), "-o",
                                str(files / "x.tflite")])
    assert wrong.exit_code == 2 and "Expected -o to end in .keras" in wrong.output


@pytest.mark.slow
def test_demo_runs_end_to_end_showing_each_stage_and_epoch(tmp_path, monkeypatch):
    from kmot import demo

    said, real = [], demo.run_demo

    def recording(*args, progress, **kwargs):
        return real(*args, progress=lambda m: (said.append(str(m)), progress(m)), **kwargs)

    monkeypatch.setattr(demo, "run_demo", recording)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--epochs", "3",
                                 "--finetune-epochs", "1"])
    assert result.exit_code == 0, result.output
    for stage, epochs in (("training the baseline", 3), ("pruning 80% (global allocation)", 1),
                          ("pruning 50% of the channels", 1),
                          ("clustering (16 clusters)", 1), ("quantization-aware training", 1),
                          ("pruning-preserving QAT", 1), ("distilling a half-size student", 3)):
        assert [f"{stage}: epoch {i}/{epochs}" for i in range(1, epochs + 1)] == [
            m for m in said if m.startswith(f"{stage}: epoch")], said
    # not a terminal: each message is a line of the output, with its time
    assert re.search(r"\[ *\d+\.\d s\] distilling a half-size student: epoch 3/3\n", result.output)
    for name in ("baseline", "ptq_int8", "pruned_80", "channels_50", "clustered_16", "qat_int8",
                 "pqat_int8", "student_int8"):
        assert (tmp_path / f"{name}.tflite").is_file()
        assert name in result.output
    assert "gate: PASSED" in result.output and "registry: pqat_int8 is digits v1" in result.output

    # The report is a release record: memory, how each candidate was made, the
    # gate's verdict and the registry version, in report.json and in the page.
    record = json.loads((tmp_path / "report" / "report.json").read_text())
    candidates = {c["name"]: c for c in record["candidates"]}
    assert record["settings"]["memory"] is True
    assert all(c["memory"]["net_mb"] > 0 for c in candidates.values())
    assert [s["technique"] for s in candidates["pqat_int8"]["provenance"]["steps"]] == [
        "prune_low_magnitude", "fine-tune", "strip_pruning", "quantize_model", "fine-tune"]
    assert candidates["pqat_int8"]["provenance"]["export"] == "int8"
    (source,) = {c["provenance"]["source_sha256"] for n, c in candidates.items()
                 if n != "baseline"}  # every candidate was made from the one baseline
    assert len(source) == 64 and candidates["baseline"]["provenance"]["steps"][0]["technique"] \
        == "train"
    assert record["gate"]["passed"] is True
    assert {c["candidate"] for c in record["gate"]["checks"]} == {"pqat_int8"}
    (registration,) = record["registrations"]
    assert registration == {"candidate": "pqat_int8", "name": "digits", "version": 1,
                            "sha256": registration["sha256"], "stage": "production",
                            "registry": str((tmp_path / "registry").resolve())}
    from kmot._files import sha256_file

    assert registration["sha256"] == sha256_file(tmp_path / "pqat_int8.tflite")

    from evaluate.test_html import console_messages, run_chromium

    url = (tmp_path / "report" / "report.html").resolve().as_uri()
    dom = run_chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom) == []
    for shown in ("digits v1", "(production)", "Gate: ", "PASSED", "prune_low_magnitude",
                  "pqat_int8: accuracy"):
        assert shown in dom.stdout, shown
    # The summary line gives the candidate's measured memory beside the baseline's (the
    # figures depend on the machine and allocator, so only their form is fixed here).
    assert re.search(r"memory \d+\.\d MB \(baseline \d+\.\d\)", dom.stdout), dom.stdout[-3000:]
