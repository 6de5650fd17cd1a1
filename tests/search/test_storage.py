"""Opening one new Optuna storage from several processes at the same moment."""

import subprocess
import sys
import time

import optuna

#: Each child waits for the `go` file, then opens the storage and the study: all of them
#: meet Optuna's schema creation together.
CHILD = """
import pathlib, sys
from kmot.search.trials import open_study
go = pathlib.Path(sys.argv[2])
pathlib.Path(sys.argv[3]).touch()  # ready
while not go.exists():  # a busy wait: the children start within a millisecond
    pass
study = open_study(sys.argv[1], "s", pruner=None, seed=0)
print(len(study.get_trials()))
"""


def test_workers_that_open_a_new_sqlite_study_together_all_get_it(tmp_path):
    # Without the creation lock, 6 children collided on Optuna's schema version row
    # ("UNIQUE constraint failed: alembic_version.version_num") in 5 of 5 rounds here.
    for round_ in range(2):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        go = tmp_path / f"go{round_}"
        ready = [tmp_path / f"ready{round_}-{i}" for i in range(6)]
        children = [subprocess.Popen([sys.executable, "-c", CHILD, url, str(go), str(r)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for r in ready]
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            time.sleep(0.05)  # until every child has imported kmot and is polling
        go.touch()
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            assert out.strip() == "0"
        studies = optuna.get_all_study_summaries(storage=url)
        assert [s.study_name for s in studies] == ["s"]
