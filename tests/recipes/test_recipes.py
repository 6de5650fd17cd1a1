import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kmot.cli import app
from kmot.recipes import RecipeError, load_recipe, optimize


@pytest.mark.parametrize("recipe, message", [
    ({"steps": []}, r"name: Field required"),
    ({"name": "r", "steps": [{"cluster": {"number_of_clusters": 1}}]},
     r"steps\.0\.cluster\.number_of_clusters: Input should be greater than or equal to 2 \(received 1\)"),
    ({"name": "r", "steps": [{"prune": {"finl_sparsity": 0.8}}]},
     r"steps\.0\.prune\.finl_sparsity: Extra inputs are not permitted"),
    ({"name": "r", "steps": [{"prun": {}}]}, r"steps\[0\] has unknown kind 'prun'"),
    ({"name": "r", "export": {"quantize": "int4"}}, r"export\.quantize: Input should be"),
    ({"name": "r", "training": {"epochs": 0}}, r"training\.epochs: Input should be greater than or equal to 1"),
])
def test_validation_errors_point_at_the_field(recipe, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)


def test_yaml_file_and_its_errors(tmp_path):
    good = tmp_path / "r.yaml"
    good.write_text("name: r\nsteps:\n  - prune: {final_sparsity: 0.5}\n  - quantize\n")
    recipe = load_recipe(good)
    assert [s.kind for s in recipe.steps] == ["prune", "quantize"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad.yaml is not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match=r"No such recipe file"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_conv_bn_dense, digits_data):
    folder = tmp_path_factory.mktemp("recipe")
    trained_conv_bn_dense.save(folder / "base.keras")
    x, y, x_val, y_val = digits_data
    np.savez(folder / "train.npz", x=x[:512], y=y[:512])
    np.savez(folder / "val.npz", x=x_val[:128], y=y_val[:128])
    return folder


RECIPE = {"name": "small", "training": {"epochs": 1},
          "steps": [{"prune": {"final_sparsity": 0.5}}, {"quantize": {"preserve_sparsity": True}}],
          "evaluate": {"runs": 5, "warmup": 1}, "gate": {"max_accuracy_drop": 0.5}}


def test_pipeline_runs_and_resumes(files):
    out = files / "out"
    first = optimize(files / "base.keras", RECIPE, train_data=files / "train.npz",
                     val_data=files / "val.npz", out_dir=out, progress=False)
    assert [s["reused"] for s in first.steps] == [False, False]
    assert first.passed and (out / "report" / "report.html").is_file()
    from kmot.export import inspect

    info = inspect(first.tflite)
    assert info.is_quantized and info.float_ops_between_io() == []
    assert min(w.sparsity for w in info.weights if not w.is_bias) >= 0.49  # pruning kept by PQAT
    from kmot._files import sha256_file
    from kmot.evaluate import Report

    record = Report.load(out / "report")  # how it was made, and the gate's verdict
    made = record.candidate("small").provenance
    assert [(s.technique, s.options["epochs"]) for s in made.steps] == [("prune", 1),
                                                                         ("quantize", 1)]
    assert made.steps[0].options["final_sparsity"] == 0.5 and made.export == "int8"
    assert made.recipe == "small" and len(made.recipe_sha256) == 64
    assert made.source_sha256 == sha256_file(files / "base.keras")
    assert record.gate.passed and record.gate.checks[0].budget == "max_accuracy_drop"
    again = optimize(files / "base.keras", RECIPE, train_data=files / "train.npz",
                     val_data=files / "val.npz", out_dir=out, progress=False)
    assert [s["reused"] for s in again.steps] == [True, True]
    changed = {**RECIPE, "steps": [RECIPE["steps"][0], {"quantize": {}}]}
    third = optimize(files / "base.keras", changed, train_data=files / "train.npz",
                     val_data=files / "val.npz", out_dir=out, progress=False)
    assert [s["reused"] for s in third.steps] == [True, False]  # only the changed step re-runs


def test_cli_exit_codes(files):
    runner = CliRunner()
    strict = files / "strict.yaml"
    strict.write_text(json.dumps({**RECIPE, "gate": {"min_accuracy": 1.01}}))
    args = ["optimize", str(files / "base.keras"), "--recipe", str(strict), "--data",
            str(files / "train.npz"), "--val", str(files / "val.npz"), "--out", str(files / "out2")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "gate: failed" in result.output
    bad = files / "bad.yaml"
    bad.write_text("name: r\nsteps:\n  - cluster: {number_of_clusters: 1}\n")
    result = runner.invoke(app, args[:3] + [str(bad)] + args[4:])
    assert result.exit_code == 2 and "number_of_clusters" in result.output
    result = runner.invoke(app, args[:5] + [str(files / "nope.npz")] + args[6:])
    assert result.exit_code == 2 and "No such training data file" in result.output


@pytest.mark.parametrize("gradual", [False, True])
def test_prune_channels_step_removes_channels_then_quantizes(files, gradual):
    """A recipe step that removes half the channels: the int8 file has smaller kernels."""
    from kmot.export import inspect

    recipe = {"name": "slim", "training": {"epochs": 1},
              "steps": [{"prune_channels": {"sparsity": 0.5, "gradual": gradual}}, "quantize"],
              "evaluate": {"runs": 3, "warmup": 0, "memory": False}}
    out = files / f"slim_{gradual}"
    result = optimize(files / "base.keras", recipe, train_data=files / "train.npz",
                      val_data=files / "val.npz", out_dir=out, progress=False)
    before = inspect(out / "baseline.tflite")
    after = inspect(result.tflite)
    assert after.is_quantized and after.float_ops_between_io() == []
    params = lambda info: sum(int(np.prod(w.shape)) for w in info.weights)  # noqa: E731
    assert params(after) < 0.8 * params(before)
    made = result.report.candidate("slim").provenance
    assert made.steps[0].technique == "prune_channels"
    assert made.steps[0].options["gradual"] is gradual


def test_prune_channels_step_options_are_checked():
    with pytest.raises(RecipeError, match=r"steps\.0\.prune_channels\.sparsity: Input should "
                                          r"be less than 1"):
        load_recipe({"name": "r", "steps": [{"prune_channels": {"sparsity": 1.0}}]})
    with pytest.raises(RecipeError, match=r"importance 'taylor' ranks once"):
        load_recipe({"name": "r", "steps": [{"prune_channels": {"importance": "taylor",
                                                                "gradual": True}}]})


def test_factorize_step_makes_fewer_parameters(files):
    recipe = {"name": "low_rank", "training": {"epochs": 1},
              "steps": [{"factorize": {"compression": 2.0}}],
              "evaluate": {"runs": 3, "warmup": 0, "memory": False}}
    result = optimize(files / "base.keras", recipe, train_data=files / "train.npz",
                      val_data=files / "val.npz", out_dir=files / "low_rank", progress=False)
    from kmot.export import load_model

    base = load_model(files / "base.keras")
    assert result.model.count_params() <= base.count_params() / 2 * 1.05
    assert result.report.candidate("low_rank").provenance.steps[0].options["compression"] == 2.0
    with pytest.raises(RecipeError, match=r"give one of rank, energy and compression"):
        load_recipe({"name": "r", "steps": [{"factorize": {"rank": 4, "energy": 0.9}}]})


def test_cosine_schedule_decays_each_step_to_zero(files):
    recipe = {"name": "cos", "training": {"epochs": 1, "schedule": "cosine",
                                          "learning_rate": 5e-3},
              "steps": [{"prune_channels": {"sparsity": 0.5}}],
              "evaluate": {"runs": 2, "warmup": 0, "memory": False}}
    result = optimize(files / "base.keras", recipe, train_data=files / "train.npz",
                      val_data=files / "val.npz", out_dir=files / "cosine", progress=False)
    optimizer = result.model.optimizer
    assert optimizer.iterations.numpy() == 8  # 512 samples, batch 64, 1 epoch
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)  # decayed fully
    with pytest.raises(RecipeError, match=r"training\.schedule: Input should be 'constant' or "
                                          r"'cosine'"):
        load_recipe({"name": "r", "training": {"schedule": "step"}})
