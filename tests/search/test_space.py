"""The search space, candidate order, choice and score: no training."""

import pytest

from kmot.search import STAGES, SearchError, SearchSpace, load_space
from kmot.search.build import score
from kmot.search.results import choose, closest, front
from kmot.search.stages import qat_candidate, trial_candidate, untrained_candidates


def test_stages_run_from_least_to_most_invasive():
    space = load_space(None)
    names = [c.name for c in untrained_candidates(space, ["conv2", "dense1", "conv1"])]
    assert names == ["ptq_float16", "ptq_dynamic", "ptq_int8", "int8_keep1", "int8_keep2",
                     "ptq_int16x8"]
    assert STAGES == ("ptq", "selective", "qat", "search")
    keep2 = untrained_candidates(space, ["conv2", "dense1", "conv1"])[4]
    assert keep2.recipe["export"] == {"quantize": "int8", "calibration_samples": 200,
                                      "keep_float": ["conv2", "dense1"]}
    assert not keep2.trained and qat_candidate(space).trained


def test_every_candidate_is_a_valid_recipe():
    from kmot.recipes import load_recipe

    space = load_space(None)
    configs = list(space.grid())
    assert {c["technique"] for c in configs} == set(space.techniques)
    for i, config in enumerate(configs):
        recipe = load_recipe(trial_candidate(space, config, i).recipe)
        assert recipe.steps
    pcqat = next(c for c in configs if c["technique"] == "pcqat")
    kinds = [s.kind for s in load_recipe(trial_candidate(space, pcqat, 0).recipe).steps]
    assert kinds == ["prune", "cluster", "quantize"]


def test_grid_and_suggest_share_keys():
    import optuna

    space = SearchSpace(techniques={"prune": {"final_sparsity": [0.5, 0.8]},
                                    "cqat": {"number_of_clusters": [8]}},
                        export=["float32", "int8"])
    grid = list(space.grid())
    assert len(grid) == 2 * 2 + 1
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    assert space.suggest(trial) in grid
    assert space.scan() == [{"technique": "prune", "prune.final_sparsity": 0.8,
                             "prune.export": "int8"},
                            {"technique": "cqat", "cqat.number_of_clusters": 8}]
    assert all(config in grid for config in space.scan())
    prune = space.scan()[0]
    assert space.neighbour(prune, stronger=False)["prune.final_sparsity"] == 0.5
    assert space.neighbour(prune, stronger=True) is None  # 0.8 is the strongest given
    cqat = {"technique": "cqat", "cqat.number_of_clusters": 8}
    assert space.neighbour(cqat, stronger=True) is None  # fewer clusters compress more
    assert space.neighbour(cqat, stronger=False) is None  # only 8 given


def test_the_scan_runs_the_least_invasive_technique_first_whatever_the_order_given():
    """A space as YAML gives it (keys sorted: pqat before prune) still scans pruning
    alone before pruning with QAT, and clustering before CQAT."""
    space = SearchSpace(techniques={"pqat": {"final_sparsity": [0.6, 0.8]},
                                    "cqat": {"number_of_clusters": [8]},
                                    "prune": {"final_sparsity": [0.6, 0.8]},
                                    "cluster": {"number_of_clusters": [16]}})
    assert [c["technique"] for c in space.scan()] == ["prune", "cluster", "pqat", "cqat"]


@pytest.mark.parametrize("bad, match", [
    ({"techniques": {"quantum": {}}}, "unknown technique 'quantum'"),
    ({"techniques": {"prune": {"sparsity": [0.5]}}}, "has no knob 'sparsity'"),
    ({"techniques": {"prune": {"final_sparsity": []}}}, "non-empty list"),
    ({"stages": ["ptq", "magic"]}, "stages"),
    ({"epochs": 0}, "epochs"),
    ({"colour": "red"}, "colour"),
])
def test_bad_space_is_named(bad, match):
    with pytest.raises(SearchError, match=match):
        load_space(bad)


def test_space_file_errors(tmp_path):
    with pytest.raises(SearchError, match="No such search space file"):
        load_space(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SearchError, match="to be a mapping"):
        load_space(tmp_path / "list.yaml")


def _entry(name, stage, accuracy, gzip, passed):
    return {"name": name, "stage": stage, "meets_budgets": passed,
            "metrics": {"accuracy": accuracy, "gzip_bytes": gzip},
            "checks": [{"budget": "max_gzip_bytes", "value": gzip, "limit": 50, "passed": passed}]}


def test_choice_is_the_first_stage_that_meets_then_the_most_accurate():
    entries = [_entry("ptq_int8", "ptq", 0.97, 80, False), _entry("qat", "qat", 0.98, 70, False),
               _entry("t1", "search", 0.95, 30, True), _entry("t2", "search", 0.96, 40, True),
               _entry("t3", "search", 0.99, 60, False)]
    assert choose(entries, STAGES)["name"] == "t2"
    entries[1] = _entry("qat", "qat", 0.90, 45, True)
    assert choose(entries, STAGES)["name"] == "qat"  # less invasive wins over more accurate
    assert front(entries) == ["t1", "t2", "t3"]  # t3 dominates ptq_int8, t2 the qat one
    assert closest([e for e in entries if not e["meets_budgets"]], 1) == ["t3"]


def test_score_ranks_every_feasible_candidate_above_every_infeasible_one():
    met = [{"passed": True, "value": 1, "limit": 2}]
    missed = [{"passed": False, "value": 2.2, "limit": 2}]
    assert score(met, 0.5) == 0.5
    assert score(missed, 0.99) < score(met, 0.01)
    assert score(missed, 0.99) > score([{"passed": False, "value": 4, "limit": 2}], 0.99)
