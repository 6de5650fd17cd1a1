"""`kmot search` end to end on a tiny digits model: order, stop, gate, files, exit codes."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kmot.cli import app

runner = CliRunner()


def _yaml(path, data):
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _search(files, out, budgets, space, *extra):
    args = ["search", str(files / "base.keras"), "--budgets", str(budgets),
            "--data", str(files / "train.npz"), "--val", str(files / "val.npz"),
            "--out", str(out), "--space", str(_yaml(out.parent / f"{out.name}.space.yaml", space)),
            *extra]
    return runner.invoke(app, args)


@pytest.fixture(scope="module")
def loose(files, tmp_path_factory):
    """A budget float16 PTQ meets: the search stops at its first candidate."""
    folder = tmp_path_factory.mktemp("loose")
    budgets = _yaml(folder / "budgets.yaml", {"max_accuracy_drop": 0.05})
    out = folder / "out"
    result = _search(files, out, budgets, {"stages": ["ptq", "qat"], "ptq": ["float16", "int8"],
                                           "runs": 5})
    return result, out, budgets


def test_stops_at_the_least_invasive_candidate_that_meets_the_budgets(loose):
    result, out, _ = loose
    assert result.exit_code == 0, result.output
    found = json.loads((out / "search.json").read_text())
    assert [e["name"] for e in found["candidates"]] == ["ptq_float16"]  # int8, QAT never ran
    assert found["chosen"] == "ptq_float16" and "chosen: ptq_float16" in result.output
    entry = found["candidates"][0]
    assert entry["trained"] is False and entry["meets_budgets"] and entry["ruled_out_by"] == []
    for key in ("accuracy", "p50_ms", "p90_ms", "bytes", "gzip_bytes"):
        assert entry["metrics"][key] > 0
    assert (out / "chosen.tflite").read_bytes() == (out / entry["tflite"]).read_bytes()
    assert (out / "report" / "report.html").is_file()


def test_budgets_are_the_gates_and_its_verdict_decides(loose, files):
    from kmot.evaluate import gate

    _, out, budgets = loose
    entry = json.loads((out / "search.json").read_text())["candidates"][0]
    verdict = gate(out / "candidates" / "ptq_float16" / "report.json", budgets,
                   candidate="ptq_float16")
    assert [(c["budget"], c["value"], c["limit"], c["passed"]) for c in entry["checks"]] == \
        [(c.budget, c.value, c.limit, c.passed) for c in verdict.checks]
    # The same malformed budgets file fails gate and search with the same message.
    bad = _yaml(out.parent / "bad.yaml", {"max_accuracy_drop": 0.01, "max_gzip_kb": 3})
    by_gate = runner.invoke(app, ["gate", str(out / "report"), "--budgets", str(bad)])
    by_search = _search(files, out.parent / "bad_out", bad, {"stages": ["ptq"]})
    assert by_gate.exit_code == by_search.exit_code == 2
    assert "unknown budget 'max_gzip_kb'" in by_search.output
    assert by_gate.output == by_search.output


def test_the_chosen_recipe_reproduces_the_candidate_with_optimize(loose, files, tmp_path):
    from kmot.recipes import load_recipe, optimize

    _, out, _ = loose
    recipe = load_recipe(out / "chosen.yaml")
    assert recipe.export.quantize == "float16" and recipe.gate == {"max_accuracy_drop": 0.05}
    again = optimize(files / "base.keras", out / "chosen.yaml", train_data=files / "train.npz",
                     val_data=files / "val.npz", out_dir=tmp_path)
    entry = json.loads((out / "search.json").read_text())["candidates"][0]
    assert again.passed
    assert again.report.candidate(recipe.name).metrics["accuracy"] == entry["metrics"]["accuracy"]


@pytest.mark.slow
def test_impossible_budgets_exit_1_with_every_candidate_in_order(files, tmp_path):
    budgets = _yaml(tmp_path / "budgets.yaml", {"max_gzip_bytes": 1000})
    space = {"epochs": 1, "runs": 5, "ptq": ["float16", "int8"], "keep_float": [1],
             "int16x8": False, "export": ["int8"],
             "techniques": {"prune": {"final_sparsity": [0.5]}}}
    result = _search(files, tmp_path / "out", budgets, space, "--trials", "1")
    assert result.exit_code == 1, result.output
    found = json.loads((tmp_path / "out" / "search.json").read_text())
    names = [e["name"] for e in found["candidates"]]
    assert names == ["ptq_float16", "ptq_int8", "int8_keep1", "qat_int8", "trial_0000_prune"]
    assert [e["stage"] for e in found["candidates"]] == ["ptq", "ptq", "selective", "qat",
                                                        "search"]
    assert [e["trained"] for e in found["candidates"]] == [False] * 3 + [True] * 2
    assert all(e["ruled_out_by"] == ["max_gzip_bytes"] for e in found["candidates"])
    assert found["chosen"] is None and len(found["closest"]) == 3
    keep = found["candidates"][2]
    assert keep["params"]["keep_float"] and keep["techniques"] == ["ptq int8", "keep float"]
    assert not (tmp_path / "out" / "chosen.tflite").exists()
    page = (tmp_path / "out" / "report" / "report.html").read_text()
    assert "plot-search-front" in page and "ruled out by max_gzip_bytes" in page
    assert "no candidate meets every budget" in result.output


def test_a_trial_that_cannot_meet_the_accuracy_budget_stops_early(files, tmp_path):
    import optuna

    from kmot.search import search

    space = {"stages": ["search"], "epochs": 2, "prune_slack": 0.0, "runs": 5,
             "techniques": {"pqat": {"final_sparsity": [0.8]}}}
    result = search(files / "base.keras", {"min_accuracy": 0.999}, data=files / "train.npz",
                    val=files / "val.npz", out=tmp_path, trials=1, space=space, progress=False)
    assert result.chosen is None and result.candidates == []  # never exported or measured
    (trial,) = result.trials
    # Judged at the end of its pruning step (2 epochs of 4): QAT never ran.
    assert trial["state"] == "PRUNED" and trial["stopped_at_epoch"] == 2
    stored = optuna.load_study(study_name="kmot-search",
                               storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert [t.state.name for t in stored] == ["PRUNED"]
    assert stored[0].user_attrs["epochs"] == 4 and list(stored[0].intermediate_values) == [0, 1]


@pytest.mark.parametrize("change, match", [
    ({"data": "missing.npz"}, "missing.npz"),
    ({"space": {"techniques": {"quantum": {}}}}, "unknown technique 'quantum'"),
    ({"storage": "nosuchdb://here"}, "Could not open the Optuna storage"),
    ({"val": "short.npz"}, "does not fit the model's input"),
])
def test_bad_input_exits_2_with_the_fix(files, tmp_path, change, match):
    np.savez(tmp_path / "short.npz", x=np.zeros((4, 8, 8), "float32"), y=np.zeros(4, "int64"))
    budgets = _yaml(tmp_path / "budgets.yaml", {"max_accuracy_drop": 0.01})
    data = str(tmp_path / change["data"]) if "data" in change else str(files / "train.npz")
    val = str(tmp_path / change["val"]) if "val" in change else str(files / "val.npz")
    args = ["search", str(files / "base.keras"), "--budgets", str(budgets), "--data", data,
            "--val", val, "--out", str(tmp_path / "out")]
    if "space" in change:
        args += ["--space", str(_yaml(tmp_path / "space.yaml", change["space"]))]
    if "storage" in change:
        args += ["--storage", change["storage"]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert match in " ".join(result.output.split())
