"""The CLI boundary (issue 13, part A): every bad input a clear error, user text as typed.

Each test names the defect it pins. They run in-process on a four-input Dense model,
so they are fast; one test sends a real SIGINT to a `kmot convert` subprocess.
"""

import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest
from faults import cli_env, unwritable_folder
from typer.testing import CliRunner

from kmot import demo as demo_module
from kmot import export as export_api
from kmot.cli import app
from kmot.errors import CalibrationDataError, EvaluationError, KmotError, ModelFileError
from kmot.evaluate.data import load_data
from kmot.export import InputSpec, calibration_samples, load_model, to_litert

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def failed_cleanly(result, code=2):
    """Exit ``code``, an ``error:`` line on stderr, and no traceback anywhere."""
    return (result.exit_code == code and "Traceback" not in result.output
            and "error:" in result.stderr and "error:" not in result.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="tiny")
    model.save(folder / "m.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2),
                      keras.layers.Dense(3)]).save(folder / "lambda.keras")
    to_litert(model, folder / "m.tflite")
    x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    y = np.arange(16) % 3
    np.savez(folder / "ok.npz", x=x, y=y)
    for name, row, col, value in (("inf", 5, 2, np.inf), ("nan", 3, 1, np.nan)):
        bad = x.copy()
        bad[row, col] = value
        np.savez(folder / f"{name}.npz", x=bad, y=y)
    return folder


def snapshot(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


# --- item 7: raw tracebacks -> error:, exit 2 ------------------------------------------

def test_a_corrupt_keras_file_is_not_reported_as_missing(files, tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(os.urandom(500))
    result = cli("convert", corrupt, "-o", tmp_path / "o.tflite")
    assert failed_cleanly(result), result.output
    assert "not a readable .keras archive" in result.output
    assert "not found" not in result.output.lower()
    with pytest.raises(ModelFileError, match=r"not a readable .keras archive"):
        load_model(corrupt)


def test_the_safe_mode_refusal_names_safe_mode_and_the_fix(files, tmp_path):
    result = cli("convert", files / "lambda.keras", "-o", tmp_path / "o.tflite")
    assert failed_cleanly(result), result.output
    assert "safe_mode=True" in result.output and "Lambda" in result.output
    assert "register_keras_serializable" in result.output
    assert not (tmp_path / "o.tflite").exists()


def _write(path, kind):
    """A data file that is not a usable .npz, and the words its error must contain."""
    good = np.zeros((4, 4), "float32")
    if kind == "missing":
        return "No such data file"
    if kind == "folder":
        path.mkdir()
        return "is a folder"
    if kind == "empty":
        path.write_bytes(b"")
        return "is empty (0 bytes)"
    if kind == "random bytes":
        path.write_bytes(os.urandom(300))
        return "is not an .npz (zip) archive"
    if kind == "truncated":
        np.savez(path, x=good)
        path.write_bytes(path.read_bytes()[:100])
        return "damaged or truncated"
    if kind == "npy":
        with open(path, "wb") as f:
            np.save(f, good)
        return "is a .npy file"
    if kind == "object dtype":
        np.savez(path, x=np.array([{"a": 1}] * 4, dtype=object))
        return "holds Python objects (dtype=object)"
    if kind == "text dtype":
        np.savez(path, x=np.array([["a"] * 4] * 4))
        return "is not numeric"
    if kind == "no arrays":
        np.savez(path)
        return "holds no arrays"
    if kind == "other zip":  # a .keras model passed where data goes
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", "{}")
        return "member(s) ['config.json'] are not NumPy arrays"
    raise AssertionError(kind)


BAD_FILES = ["missing", "folder", "empty", "random bytes", "truncated", "npy", "object dtype",
             "text dtype", "no arrays", "other zip"]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_every_unreadable_calibration_file_is_a_clear_error(files, tmp_path, kind):
    data = tmp_path / "calib.npz"
    words = _write(data, kind)
    result = cli("convert", files / "m.keras", "-o", tmp_path / "o.tflite", "--quantize", "int8",
                  "--calibration", data)
    assert failed_cleanly(result), result.output
    assert words in result.output
    assert not (tmp_path / "o.tflite").exists()


@pytest.mark.parametrize("kind", BAD_FILES)
def test_every_unreadable_validation_file_is_an_evaluation_error(tmp_path, kind):
    data = tmp_path / "val.npz"
    words = _write(data, kind)
    with pytest.raises(EvaluationError, match=re.escape(words)):
        load_data(data)


# --- item 3: NaN and inf ----------------------------------------------------------------

SPECS = [InputSpec("pixels", (None, 4), "float32")]


@pytest.mark.parametrize("value, shown", [(np.inf, "inf"), (-np.inf, "-inf"), (np.nan, "nan")])
def test_calibration_data_must_be_finite_in_the_api(value, shown):
    # Before: one inf reached the converter and killed the process (SIGSEGV).
    x = np.ones((20, 4), "float32")
    x[17, 3] = value
    with pytest.raises(CalibrationDataError, match=rf"Received: pixels\[17, 3\] is {shown}\."):
        calibration_samples(x, SPECS, num_samples=5)


def test_non_finite_calibration_batches_name_their_element():
    def batches():
        yield np.ones((2, 4), "float32")
        yield np.array([[1, 2, 3, 4], [1, np.nan, 3, 4]], "float32")

    with pytest.raises(CalibrationDataError, match=r"in element 1 of the representative data. "
                                                   r"Received: pixels\[1, 1\] is nan"):
        calibration_samples(batches, SPECS)


def test_to_litert_refuses_inf_before_the_converter_runs(files):
    x = np.ones((8, 4), "float32")
    x[2, 0] = np.inf
    with pytest.raises(CalibrationDataError, match=r"\[2, 0\] is inf"):
        to_litert(load_model(files / "m.keras"), quantize="int8", representative_data=x)


@pytest.mark.parametrize("name, where", [("inf", "x[5, 2] is inf"), ("nan", "x[3, 1] is nan")])
def test_convert_and_layer_error_refuse_non_finite_data(files, tmp_path, name, where):
    convert = cli("convert", files / "m.keras", "-o", tmp_path / "o.tflite", "--quantize",
                   "int8", "--calibration", files / f"{name}.npz")
    assert failed_cleanly(convert), convert.output
    assert where in convert.output and not (tmp_path / "o.tflite").exists()
    # Before: layer-error exited 0 and printed nan RMSEs.
    measured = cli("layer-error", files / "m.keras", "--calibration", files / f"{name}.npz")
    assert failed_cleanly(measured), measured.output
    assert where in measured.output


def test_bench_on_nan_data_writes_no_report(files, tmp_path):
    # Before: exit 0, and report.json held NaN.
    out = tmp_path / "out"
    result = cli("bench", files / "m.tflite", "--data", files / "nan.npz", "--out", out,
                  "--runs", 1, "--warmup", 0, "--no-memory")
    assert failed_cleanly(result), result.output
    assert "x[3, 1] is nan" in result.output and not out.exists()


def test_validation_labels_must_be_finite():
    y = np.zeros(4)
    y[2] = np.nan
    with pytest.raises(EvaluationError, match=r"Received: y\[2\] is nan"):
        load_data((np.zeros((4, 4), "float32"), y))


# --- item 4: user text is printed as typed ----------------------------------------------

def test_markup_in_a_missing_file_name_prints_literally(tmp_path):
    result = cli("inspect", tmp_path / "x[/].tflite")  # before: MarkupError
    assert failed_cleanly(result), result.output
    assert "x[/].tflite" in result.output


def test_a_file_named_like_markup_is_shown_by_its_name(files, tmp_path):
    named = tmp_path / "[red]a.tflite"
    named.write_bytes((files / "m.tflite").read_bytes())
    result = cli("inspect", named)
    assert result.exit_code == 0, result.output
    assert "[red]a.tflite:" in result.output  # before: "a.tflite:"


def test_registry_tags_with_markup_list_and_show_literally(files, tmp_path):
    root = ["--root", tmp_path / "registry"]
    pushed = cli("registry", "push", files / "m.tflite", "--name", "tiny", "--tag", "[/]",
                  "--tag", "[red]x", *root)
    assert pushed.exit_code == 0, pushed.output
    for args in (["list"], ["list", "tiny"], ["show", "tiny"]):
        result = cli("registry", *args, *root)  # before: MarkupError on every one
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
    assert "[/], [red]x" in cli("registry", "list", "tiny", *root).output
    assert "[/], [red]x" in cli("registry", "show", "tiny", *root).output


# --- item 7 and 8: outputs checked before any work ---------------------------------------

@pytest.fixture
def no_conversion(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the conversion ran")

    monkeypatch.setattr(export_api, "to_litert", refuse)


def test_convert_output_is_checked_before_converting(files, tmp_path, no_conversion):
    (tmp_path / "a-file").write_text("keep me")
    for output, words in ((tmp_path, "which is a folder"),
                          (tmp_path / "a-file" / "o.tflite", "is a file"),
                          (unwritable_folder(tmp_path / "read-only") / "o.tflite", "does not take new files")):
        result = cli("convert", files / "m.keras", "-o", output)
        assert failed_cleanly(result), result.output  # before: exit 1, after converting
        assert words in result.output
    assert (tmp_path / "a-file").read_text() == "keep me"


@pytest.mark.parametrize("source", ["m.keras", "ok.npz"])
def test_convert_refuses_to_overwrite_its_own_input(files, source, no_conversion):
    before = (files / source).read_bytes()
    result = cli("convert", files / "m.keras", "-o", files / source, "--quantize", "int8",
                  "--calibration", files / "ok.npz")
    assert failed_cleanly(result), result.output
    assert "would destroy it" in result.output
    assert (files / source).read_bytes() == before


@pytest.fixture
def no_demo(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the demo ran")

    monkeypatch.setattr(demo_module, "run_demo", refuse)


def test_demo_out_at_a_file_is_refused_before_training(tmp_path, no_demo):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    result = cli("demo", "--out", target)
    assert failed_cleanly(result), result.output  # before: FileExistsError after training
    assert "is a file" in result.output and target.read_text() == "keep me"


@pytest.mark.parametrize("args", [
    ["demo", "--epochs", "0"], ["demo", "--epochs", "-3"], ["demo", "--finetune-epochs", "0"],
    ["demo", "--seed", "-1"], ["bench", "m.tflite", "--data", "ok.npz", "--out", "o",
                               "--runs", "0"],
    ["bench", "m.tflite", "--data", "ok.npz", "--out", "o", "--warmup", "-1"],
    ["bench", "m.tflite", "--data", "ok.npz", "--out", "o", "--threads", "0"],
    ["bench", "m.tflite", "--data", "ok.npz", "--out", "o", "--batch-size", "0"],
    ["convert", "m.keras", "-o", "o.tflite", "--samples", "0"],
    ["layer-error", "m.keras", "--calibration", "ok.npz", "--worst", "0"],
])
def test_counts_below_their_minimum_are_refused(files, args, no_demo, no_conversion):
    result = runner.invoke(app, args)  # names resolve nowhere: parsing must refuse first
    assert result.exit_code == 2, result.output  # before: demo --epochs 0 trained, then failed
    assert "Invalid value" in result.output and "Traceback" not in result.output


# --- item 1: the boundary ---------------------------------------------------------------

def _raising(error):
    def inspect(*args, **kwargs):
        raise error

    return inspect


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, files):
    monkeypatch.setattr(export_api, "inspect", _raising(RuntimeError("boom\nsecond line")))
    result = cli("inspect", files / "m.tflite")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "unexpected RuntimeError: boom" in result.stderr and "--debug" in result.stderr
    assert "Traceback" not in result.output
    debug = cli("--debug", "inspect", files / "m.tflite")
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.stderr and "second line" in debug.stderr


@pytest.mark.parametrize("error, words", [
    (PermissionError(13, "Permission denied", "/data/x.tflite"), "Permission denied"),
    (IsADirectoryError(21, "Is a directory", "/data"), "Is a directory"),
    (NotADirectoryError(20, "Not a directory", "/f/x"), "Not a directory"),
    (FileNotFoundError(2, "No such file or directory", "/nope"), "No such file"),
    (zipfile.BadZipFile("File is not a zip file"), "zip"),
])
def test_expected_os_and_file_errors_exit_two(monkeypatch, files, error, words):
    monkeypatch.setattr(export_api, "inspect", _raising(error))
    result = cli("inspect", files / "m.tflite")
    assert failed_cleanly(result), result.output
    assert words in result.stderr and "Received:" in result.stderr


def test_ctrl_c_prints_interrupted_and_exits_130(monkeypatch, files):
    monkeypatch.setattr(export_api, "inspect", _raising(KeyboardInterrupt()))
    result = cli("inspect", files / "m.tflite")
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted"


@pytest.fixture
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt here, even when pytest itself was started with
    SIGINT ignored (a background job), which kmot's boundary rightly leaves alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _default_sigint():  # for a child: what an interactive shell gives a command
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_ctrl_c_swallowed_during_conversion_still_writes_nothing(monkeypatch, files, tmp_path,
                                                                    sigint_raises):
    real = export_api.to_litert

    def converter_that_swallows_the_interrupt(*args, **kwargs):
        try:  # what TensorFlow does with a KeyboardInterrupt raised inside a __del__
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return real(*args, **kwargs)

    monkeypatch.setattr(export_api, "to_litert", converter_that_swallows_the_interrupt)
    out = tmp_path / "o.tflite"
    result = cli("convert", files / "m.keras", "-o", out)
    assert result.exit_code == 130, result.output  # before: exit 0 and the file written
    assert "interrupted" in result.stderr and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_real_convert_stops_it(files, tmp_path):
    out, temp = tmp_path / "o.tflite", tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-m", "kmot.cli", "convert", str(files / "m.keras"), "-o",
         str(out), "--quantize", "int8", "--calibration", str(files / "ok.npz")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(TMPDIR=str(temp)),
        preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while not any(temp.glob("kmot-export-*")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the conversion never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip().endswith("interrupted") and "Traceback" not in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [temp]
    # the SavedModel folder went too; what may stay is TensorFlow's own: autograph writes the
    # functions it converts to TMPDIR and Python caches their bytecode beside them, as after
    # any conversion that runs to the end
    left = [p.relative_to(temp) for p in temp.rglob("*")]
    assert all(str(p) == "__pycache__" or p.name.startswith("__autograph_generated_file")
               for p in left), left


def test_registry_errors_still_go_through_the_boundary(tmp_path):
    result = cli("registry", "show", "nothing-here", "--root", tmp_path / "registry")
    assert failed_cleanly(result), result.output


@pytest.mark.parametrize("kwargs, words", [
    ({"epochs": 0}, "epochs=0"), ({"finetune_epochs": -1}, "finetune_epochs=-1"),
    ({"out_dir": "FILE"}, "which is a file")])
def test_run_demo_checks_its_options_before_training(tmp_path, kwargs, words):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    kwargs = {"out_dir": tmp_path / "demo", **kwargs}
    if kwargs["out_dir"] == "FILE":
        kwargs["out_dir"] = target
    with pytest.raises(KmotError, match=words):
        demo_module.run_demo(**kwargs)
    assert target.read_text() == "keep me" and not (tmp_path / "demo").exists()
