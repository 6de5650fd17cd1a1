"""Workers sharing one Optuna study, and an interrupted search resumed from its storage."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

#: A search stage only, 1 epoch per trial: what the trial tests need and no more.
SPACE = {"stages": ["search"], "epochs": 1, "runs": 5,
         "techniques": {"prune": {"final_sparsity": [0.3, 0.5, 0.6, 0.7, 0.8]}},
         "export": ["float32", "int8"]}


def _inputs(folder):
    """The search's budgets and space files in `folder`."""
    (folder / "budgets.yaml").write_text("max_accuracy_drop: 0.5\n")
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))


def _start(files, folder, out, *extra):
    _inputs(folder)
    cmd = [sys.executable, "-m", "kmot.cli", "search", str(files / "base.keras"),
           "--budgets", str(folder / "budgets.yaml"), "--data", str(files / "train.npz"),
           "--val", str(files / "val.npz"), "--out", str(out), "--space",
           str(folder / "space.yaml"), *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def _trials(url, name="kmot-search"):
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - no database or study yet
        return []


@pytest.mark.slow
def test_two_workers_share_one_study_and_run_no_trial_twice(files, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [_start(files, tmp_path, tmp_path / f"w{i}", "--storage", url, "--study", "s",
                      "--trials", "3") for i in range(2)]
    for w in workers:
        output = w.communicate(timeout=600)[0]
        assert w.returncode == 0, output
    every = _trials(url, "s")
    # Six finished trials. Both workers may find the study new and queue its first
    # configurations, so a queued trial can be left; it never ran (nor trained).
    trials = [t for t in every if t.state.name != "WAITING"]
    assert all(t.datetime_start is None for t in every if t.state.name == "WAITING")
    # Finished means complete, or stopped by the budget pruner (80% sparsity after one
    # epoch can fall below the accuracy the budget needs); never failed or left running.
    states = [(t.number, t.state.name) for t in trials]
    assert len(trials) == 6, states
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), states
    assert sum(t.state.name == "COMPLETE" for t in trials) >= 3, states
    assert len({t.number for t in trials}) == 6
    by_worker = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t.number)
    assert sorted(len(v) for v in by_worker.values()) == [3, 3]
    # A configuration is trained once: a trial that drew one already run reuses its result.
    trained = [t for t in trials if "duplicate_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in trained}) == len(trained)
    for t in trials:
        if "duplicate_of" in t.user_attrs:
            first = trials[[x.number for x in trials].index(t.user_attrs["duplicate_of"])]
            assert first.params == t.params and first.value == t.value
            assert first.state == t.state
    built = [e["trial"] for i in range(2) for e in
             json.loads((tmp_path / f"w{i}" / "search.json").read_text())["candidates"]]
    # each trained trial the pruner let finish was built, by one worker
    assert sorted(built) == sorted(t.number for t in trained if t.state.name == "COMPLETE")


@pytest.mark.slow
def test_an_interrupted_search_resumes_from_its_storage(files, tmp_path):
    from kmot.search import search

    out = tmp_path / "out"
    url = f"sqlite:///{out / 'study.db'}"
    # six trials of a few seconds each: several windows with one trial done and the
    # next running (with three, the search once finished between two polls)
    worker = _start(files, tmp_path, out, "--trials", "6")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker.poll() is None:
        states = [t.state.name for t in _trials(url)]
        if "COMPLETE" in states and "RUNNING" in states:
            break
        time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    output = worker.communicate(timeout=300)[0]
    assert worker.returncode == 130, output
    first = json.loads((out / "search.json").read_text())
    assert first["interrupted"] is True
    done = [t["number"] for t in first["trials"] if t["state"] == "COMPLETE"]
    assert 1 <= len(done) < 6

    result = search(files / "base.keras", tmp_path / "budgets.yaml", data=files / "train.npz",
                    val=files / "val.npz", out=out, trials=6, space=tmp_path / "space.yaml",
                    progress=False)
    trials = _trials(url)
    # finished: complete, or stopped by the budget pruner (as in the test above)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6 and not result.interrupted, [t.state.name for t in trials]
    assert {t["number"] for t in result.trials} == {t.number for t in finished}
    # The trials finished before the interrupt are kept, not trained again.
    kept = [e for e in result.candidates if e["trial"] in done]
    assert len(kept) == len(done) and all(e.get("reused") for e in kept)
    for t in trials:  # a trial the interrupt stopped ran again as a new trial
        if t.state.name == "FAIL":
            assert t.user_attrs.get("interrupted")
            assert any(r.user_attrs.get("retry_of") == t.number for r in finished)


def test_a_ctrl_c_as_a_trial_starts_leaves_every_record_with_a_state(files, tmp_path,
                                                                       monkeypatch):
    # Ctrl-C lands where it likes: here in the study read that opens a trial, before the
    # trial trains. The record is written already, so it must still say how it ended.
    from kmot.search import run, search

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run.optuna_side, "find_duplicate", interrupted)
    _inputs(tmp_path)
    out = tmp_path / "out"
    result = search(files / "base.keras", tmp_path / "budgets.yaml", data=files / "train.npz",
                    val=files / "val.npz", out=out, trials=2, space=tmp_path / "space.yaml",
                    progress=False)
    assert result.interrupted
    saved = json.loads((out / "search.json").read_text())
    assert saved["interrupted"] is True
    assert [(t["state"], t.get("detail")) for t in saved["trials"]] == [("FAIL", "interrupted")]
    (trial,) = _trials(f"sqlite:///{out / 'study.db'}")
    assert trial.state.name == "FAIL" and trial.user_attrs.get("interrupted")
