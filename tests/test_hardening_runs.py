"""Runs that must not trust the working directory, wedge on a killed step, or leave litter.

Issue 13, items 1, 5, 6 and parts of 8: isolated child processes, resumable
recipes after a damaged step, QAT on a custom layer without get_config, one YAML
loader refusing duplicate keys, budgets and the register name checked before
training, an escaped report.md, and temporary folders swept once their run died.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from faults import run_cli

from kmot import _tempdirs
from kmot.errors import BudgetError, UnsupportedModelError
from kmot.evaluate import compare, load_budgets, measure_peak_memory
from kmot.export import to_litert
from kmot.recipes import RecipeError, load_recipe, optimize

TINY_RECIPE = {"name": "tiny", "training": {"epochs": 1, "batch_size": 64},
               "steps": [{"prune": {"final_sparsity": 0.5}}], "evaluate": None}


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)],
                            name="tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_data):
    """A tiny float model (.keras and .tflite) and digits train/val .npz files."""
    folder = tmp_path_factory.mktemp("hardening")
    x, y, x_val, y_val = digits_data
    model = tiny_model()
    model.save(folder / "base.keras")
    to_litert(model, folder / "tiny.tflite")
    np.savez(folder / "train.npz", x=x[:256], y=y[:256])
    np.savez(folder / "val.npz", x=x_val[:64], y=y_val[:64])
    return folder


def dead_pid() -> int:
    """The pid of a process that has exited (not reused this soon in practice)."""
    proc = subprocess.Popen([sys.executable, "-I", "-c", "pass"])
    proc.wait()
    return proc.pid


# -- item 1: code in the working directory never runs ------------------------------

PLANTED = "open({marker!r}, 'w').write(__name__)\nraise SystemExit(7)\n"


def plant(folder, *modules):
    """``resource.py``, ``numpy.py``... in `folder` that leave a marker file if imported."""
    for name in modules:
        (folder / f"{name}.py").write_text(PLANTED.format(marker=str(folder / f"RAN_{name}")))


def test_memory_children_do_not_import_from_the_working_directory(files, tmp_path,
                                                                   monkeypatch):
    plant(tmp_path, "resource", "numpy", "json")
    monkeypatch.chdir(tmp_path)
    stats = measure_peak_memory(files / "tiny.tflite")
    assert sorted(p.name for p in tmp_path.glob("RAN_*")) == []
    assert stats.idle_mb > 1 and stats.peak_mb >= stats.idle_mb
    assert stats.peak_mb == pytest.approx(stats.idle_mb + stats.net_mb, abs=1e-3)


@pytest.mark.slow
def test_bench_from_a_folder_with_a_planted_resource_module(files, tmp_path):
    plant(tmp_path, "resource", "numpy")
    result = run_cli(["bench", files / "tiny.tflite", "--data", files / "val.npz",
                      "--out", tmp_path / "bench", "--runs", "3", "--warmup", "1"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.glob("RAN_*")) == []
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    memory = report["candidates"][0]["memory"]
    assert memory is not None and memory["idle_mb"] > 1, report["candidates"][0]["notes"]


# -- item 5: a damaged step re-runs instead of wedging the recipe ------------------

@pytest.fixture(scope="module")
def finished(files, tmp_path_factory):
    """The output folder of one complete run of the tiny recipe."""
    out = tmp_path_factory.mktemp("finished") / "out"
    result = optimize(files / "base.keras", TINY_RECIPE, train_data=files / "train.npz",
                      val_data=files / "val.npz", out_dir=out, progress=False)
    assert [s["reused"] for s in result.steps] == [False]
    return out


def _empty(step, record):
    step.write_bytes(b"")  # what a kill -9 inside model.save left before


def _garbage(step, record):
    step.write_bytes(os.urandom(1000))


def _half_record(step, record):
    record.write_text(record.read_text()[:20])


def _other_model(step, record):
    tiny_model().save(step)  # a valid file, not the one the record was written for


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_empty, _garbage, _half_record, _other_model],
                         ids=["empty step file", "garbage step file", "truncated record",
                              "step file from another run"])
def test_a_damaged_step_is_run_again(files, finished, tmp_path, damage):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    damage(out / "steps" / "00_prune.keras", out / "steps" / "00_prune.json")
    result = optimize(files / "base.keras", TINY_RECIPE, train_data=files / "train.npz",
                      val_data=files / "val.npz", out_dir=out, progress=False)
    assert [s["reused"] for s in result.steps] == [False]
    again = optimize(files / "base.keras", TINY_RECIPE, train_data=files / "train.npz",
                     val_data=files / "val.npz", out_dir=out, progress=False)
    assert [s["reused"] for s in again.steps] == [True]  # the record is whole again
    assert not [p.name for p in out.rglob("*.part*")]


@pytest.mark.slow
def test_leftover_partial_files_of_a_killed_run_are_removed(files, finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    left = [out / "steps" / ".00_prune.keras.0123456789abcdef.part.keras",
            out / ".model.tflite.fedcba9876543210.part"]
    for path in left:
        path.write_bytes(b"partial")
    (out / "notes.part").write_text("mine")  # not a kmot temporary name: kept
    result = optimize(files / "base.keras", TINY_RECIPE, train_data=files / "train.npz",
                      val_data=files / "val.npz", out_dir=out, progress=False)
    assert [s["reused"] for s in result.steps] == [True]
    assert not any(p.exists() for p in left) and (out / "notes.part").is_file()


# -- item 8: budgets and the register name are checked before any training ---------

@pytest.mark.parametrize("change, message", [
    ({"gate": {"max_acuracy_drop": 0.1}}, r"gate: .*unknown budget 'max_acuracy_drop'"),
    ({"gate": {"max_accuracy_drop": -1}}, r"gate: .*budget 'max_accuracy_drop'"),
    ({"gate": {"metric": "accuracy"}}, r"gate: .*sets no budget"),
    ({"register": {"name": "../escape"}},
     r"register\.name: .*Expected a model name of 1-128 letters.*Received: name='\.\./escape'"),
])
def test_recipe_fails_before_training(files, tmp_path, monkeypatch, change, message):
    def no_training(*args, **kwargs):
        raise AssertionError("a step ran before the recipe was checked")

    monkeypatch.setattr("kmot.recipes.run._run_step", no_training)
    with pytest.raises(RecipeError, match=message):
        optimize(files / "base.keras", {**TINY_RECIPE, **change}, train_data=files / "train.npz",
                 val_data=files / "val.npz", out_dir=tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").rglob("*.keras"))


def test_recipe_data_must_be_finite_before_training(files, tmp_path, monkeypatch):
    monkeypatch.setattr("kmot.recipes.run._run_step", lambda *a, **k: pytest.fail("trained"))
    with np.load(files / "train.npz") as npz:
        x, y = npz["x"].copy(), npz["y"]
    x[3, 2, 1, 0] = np.inf
    np.savez(tmp_path / "train.npz", x=x, y=y)
    with pytest.raises(RecipeError, match=r"Training data must be finite.*Received: "
                       r"x\[3, 2, 1, 0\] is inf"):
        optimize(files / "base.keras", TINY_RECIPE, train_data=tmp_path / "train.npz",
                 val_data=files / "val.npz", out_dir=tmp_path / "out", progress=False)


# -- item 8: a key written twice in YAML is an error, not "the last one wins" -------

def test_duplicate_budget_keys_are_refused(tmp_path):
    path = tmp_path / "budgets.yaml"
    path.write_text("max_accuracy_drop: 0.01\nmax_bytes: 100000\nmax_accuracy_drop: 0.5\n")
    with pytest.raises(BudgetError, match=r"at line 3, column 1: found duplicate key "
                       r"'max_accuracy_drop' \(first at line 1\)"):
        load_budgets(path)
    path.write_text('{"max_bytes": 10, "max_bytes": 10000000}')  # JSON is YAML too
    with pytest.raises(BudgetError, match=r"duplicate key 'max_bytes'"):
        load_budgets(path)


def test_duplicate_recipe_keys_are_refused(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("name: r\ngate:\n  max_accuracy_drop: 0.01\n  max_accuracy_drop: 0.9\n")
    with pytest.raises(RecipeError, match=r"recipe.yaml is not valid YAML.*Received: a parse "
                       r"error at line 4, column 3: found duplicate key 'max_accuracy_drop' "
                       r"\(first at line 3\); keep one of them$"):
        load_recipe(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("name: r\ntraining: &t {epochs: 2, batch_size: 8}\n"
                    "steps:\n  - prune: {epochs: 1}\nexport: {calibration_samples: 5}\n")
    assert load_recipe(path).training.epochs == 2
    from kmot import _yaml

    assert _yaml.load("a: &d {p: 1, q: 2}\nb:\n  <<: *d\n  p: 5\n")["b"] == {"p": 5, "q": 2}


# -- item 8: report.md shows names, it does not render them -------------------------

HOSTILE = "<script>alert(1)</script>[x](javascript:alert(2))|`"


def test_report_markdown_escapes_html_and_links(files):
    report = compare({"base": files / "tiny.tflite", HOSTILE: files / "tiny.tflite"},
                     (files / "val.npz"), runs=2, warmup=0, memory=False)
    text = report.to_markdown()
    assert "<script" not in text and not re.search(r"(?<!\\)\]\(javascript", text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\[x\\](javascript:alert(2))\\|\\`" in text
    summary = next(b for b in text.split("\n\n") if b.startswith("| candidate")).splitlines()
    rows = [line for line in summary if line.startswith("| ")]
    assert len(rows) == 3  # header and two candidates
    assert len({row.count("|") - row.count("\\|") for row in rows}) == 1  # no cell split


# -- item 8: temporary folders of killed runs are removed ---------------------------

def test_stale_temporary_folders_are_swept(files, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    old = time.time() - _tempdirs.GRACE_SECONDS - 60
    dead, target = dead_pid(), tmp_path / "not-mine"
    target.mkdir()
    folders = {name: tmp_path / name for name in (
        f"kmot-export-{dead}-stale", f"kmot-evaluate-{dead}-stale", "kmot-export-legacy1",
        f"kmot-export-{os.getpid()}-alive", f"kmot-export-{dead}-recent", "kmot-exported")}
    for name, folder in folders.items():
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"x" * 1000)
        if not name.endswith("recent"):
            os.utime(folder, (old, old))
    link = tmp_path / f"kmot-export-{dead}-link"
    link.symlink_to(target)
    os.utime(link, (old, old), follow_symlinks=False)

    to_litert(tiny_model(), tmp_path / "m.tflite")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"kmot-evaluate-{dead}-stale", f"kmot-export-{os.getpid()}-alive",
                           f"kmot-export-{dead}-recent", "kmot-exported", link.name,
                           "m.tflite", "not-mine"])
    compare([files / "tiny.tflite"], files / "val.npz", runs=1, warmup=0, memory=False)
    assert not folders[f"kmot-evaluate-{dead}-stale"].exists()
    with _tempdirs.temporary_directory("export") as folder:
        assert os.path.basename(folder).startswith(f"kmot-export-{os.getpid()}-")


# -- item 6: QAT on a custom layer without get_config -------------------------------

class Doubling(keras.layers.Layer):
    """A custom layer with no get_config whose __init__ takes no `name`."""

    def __init__(self, factor=2.0, **options):
        super().__init__(**options)
        self.factor = factor

    def call(self, x):
        return x * self.factor


class Fixed(keras.layers.Layer):
    """A custom layer that cannot be rebuilt from any config."""

    def __init__(self):
        super().__init__()

    def call(self, x):
        return x * 2.0


def with_custom(layer):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, name="first")(inputs)
    x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="last")(x))


def test_qat_keeps_a_custom_layer_without_get_config_in_float():
    from kmot.core import OptimizedLayer
    from kmot.quantization import quantize_model

    layer = Doubling(3.0)  # auto-named: "doubling", or "doubling_1" after another one
    model = with_custom(layer)
    with pytest.warns(UserWarning, match=r"1 layer\(s\) cannot be quantized and stay float: "
                      rf"{layer.name} \(Doubling\)"):
        qat = quantize_model(model)
    assert type(qat.get_layer(layer.name)) is Doubling  # float, as the warning says
    wrapped = {layer.layer.name for layer in qat.layers if isinstance(layer, OptimizedLayer)}
    assert wrapped == {"first", "last"}  # the rest of the model is quantized
    x = np.random.default_rng(0).random((16, 8)).astype("float32")
    qat.compile("adam", "mse")
    qat.fit(x, np.zeros((16, 4)), epochs=1, verbose=0)
    assert qat(x).shape == (16, 4)


def test_qat_names_a_custom_layer_it_cannot_copy():
    from kmot.quantization import quantize_model

    with pytest.raises(UnsupportedModelError, match=r"Layer 'fixed' \(Fixed\) cannot be cloned "
                       r"from its config.*implement get_config.*Received: TypeError"):
        quantize_model(with_custom(Fixed()))
