"""The Optuna side of a search: the shared study, early stopping on the accuracy budget,
and one run per configuration across every worker.

The study lives in any Optuna RDB storage (SQLite under the output folder by
default), so several workers (processes or machines) given the same storage and
study name share it: Optuna hands each trial to one worker, and a worker that
samples a configuration another trial already ran (or is running) reuses that
result instead of training it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # Windows: no file locks; the retry in _storage remains
    fcntl = None  # type: ignore[assignment]

import numpy as np

from kmot.search.space import SearchError

__all__ = ["BudgetPruner", "EpochReporter", "find_duplicate", "open_study", "required_accuracy"]

FINISHED = ("COMPLETE", "PRUNED")
#: The fraction of a step's epochs after which its validation accuracy may stop a trial.
JUDGE_FROM = 0.7


def required_accuracy(budgets: Any, baseline_accuracy: float | None) -> float | None:
    """The accuracy a candidate must reach by the budgets, or None when none limits it."""
    if budgets.metric != "accuracy":
        return None
    floor = []
    if budgets.min_accuracy is not None:
        floor.append(budgets.min_accuracy)
    if budgets.max_accuracy_drop is not None and baseline_accuracy is not None:
        floor.append(baseline_accuracy - budgets.max_accuracy_drop)
    return max(floor) if floor else None


def _pruner_class() -> type:
    import optuna

    class BudgetPruner(optuna.pruners.BasePruner):
        """Stops a trial whose validation accuracy cannot meet the accuracy budget.

        After epoch ``e`` of ``E`` (the trial's ``epochs`` user attribute), the trial
        stops when its accuracy is below ``required - slack * (E - e - 1) / E``: the
        remaining epochs may still recover up to ``slack``; after the last epoch, below
        ``required`` stops it before export and measurement. Each recipe step is judged
        only from 70% of its epochs on (`JUDGE_FROM`), once a pruning schedule has
        reached its final sparsity: before that its accuracy dips and recovers.
        """

        def __init__(self, required: float | None, slack: float) -> None:
            self.required, self.slack = required, slack

        def prune(self, study: Any, trial: Any) -> bool:
            step = trial.last_step
            if self.required is None or step is None:
                return False
            total = max(int(trial.user_attrs.get("epochs", step + 1)), step + 1)
            remaining = (total - step - 1) / total
            return trial.intermediate_values[step] < self.required - self.slack * remaining

    return BudgetPruner


def BudgetPruner(required: float | None, slack: float) -> Any:
    """See `_pruner_class` (Optuna loads on first use)."""
    return _pruner_class()(required, slack)


class EpochReporter:
    """A Keras callback: validation accuracy after each epoch, shown and reported to
    the trial (which may then stop it: `optuna.TrialPruned` leaves the fit)."""

    def __new__(cls, val: tuple[np.ndarray, np.ndarray], *, total: int, trial: Any = None,
                display: Any = None):
        import keras

        x_val, y_val = val

        class Callback(keras.callbacks.Callback):
            epoch = 0

            def on_epoch_end(self, epoch, logs=None):
                outputs = self.model.predict(x_val, batch_size=256, verbose=0)
                if isinstance(outputs, (list, tuple)):
                    outputs = outputs[0]
                accuracy = float(np.mean(np.argmax(outputs, axis=-1) == y_val))
                step = Callback.epoch
                Callback.epoch += 1
                if display is not None:
                    display.epoch(step + 1, total, accuracy)
                if trial is not None:
                    trial.report(accuracy, step)
                    # A sparsity schedule dips, then recovers, until it ends (70% of a
                    # step by default): a step is judged from then on.
                    step_epochs = int(self.params.get("epochs") or epoch + 1)
                    judged = epoch + 1 >= math.ceil(JUDGE_FROM * step_epochs)
                    if judged and trial.should_prune():
                        import optuna

                        trial.set_user_attr("stopped_at_epoch", step + 1)
                        raise optuna.TrialPruned(
                            f"validation accuracy {accuracy:.4f} after epoch {step + 1} of "
                            f"{total} cannot meet the accuracy budget")

        return Callback()


#: What a storage raises when another worker created its tables at the same moment:
#: SQLAlchemy's "table ... already exists", or the unique version row Optuna's schema
#: migration inserts ("UNIQUE constraint failed: alembic_version.version_num", or a
#: server database's "duplicate key").
_CREATED_MEANWHILE = ("already exists", "UNIQUE constraint failed", "duplicate key")


@contextlib.contextmanager
def _creation_lock(url: str) -> Iterator[None]:
    """For a SQLite file, an exclusive lock on `<file>.lock` while the storage opens:
    workers that start together create its schema one after another. Other databases
    rely on the retry in `_storage`."""
    path = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
    if not path or path.startswith(":memory:") or fcntl is None:
        yield
        return
    lock = Path(path.split("?", 1)[0] + ".lock")
    try:
        handle = open(lock, "a")  # noqa: SIM115 - held for the block below
    except OSError:  # a read-only folder: open without the lock, the retry still holds
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _storage(url: str) -> Any:
    import optuna

    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(10):
        try:
            with _creation_lock(url):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except Exception as err:  # noqa: BLE001 - SQLAlchemy and drivers raise many kinds
            if any(s in str(err) for s in _CREATED_MEANWHILE) and attempt < 9:
                time.sleep(0.3 * (attempt + 1))  # another worker made the tables: open them
                continue
            first = str(err).splitlines()[0][:160] if str(err) else ""
            raise SearchError(
                f"Could not open the Optuna storage. Expected an RDB URL such as "
                f"sqlite:///study.db or postgresql://user:pass@host/db. Received: {url!r:.120} "
                f"({type(err).__name__}: {first})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def check_storage(url: str) -> None:
    """Opens the storage once: a bad URL or an unreachable server is a `SearchError`."""
    _storage(url).remove_session()


def open_study(url: str, name: str, *, pruner: Any, seed: int) -> Any:
    """The study `name` in the storage at `url`, created if missing (safely when
    several workers start at once)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(url)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    for attempt in range(5):
        try:
            return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                       sampler=sampler, pruner=pruner, load_if_exists=True)
        except optuna.exceptions.DuplicatedStudyError:  # created by another worker meanwhile
            time.sleep(0.2 * (attempt + 1))
        except Exception as err:  # noqa: BLE001 - e.g. a study of another direction
            raise SearchError(f"Could not open study {name!r} in {url!r:.120}: {err}. "
                              "Expected a study made by kmot search (maximize), or a new "
                              "name.") from None
    return optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)


def worker_seed(worker: str, seed: int, finished: int) -> int:
    """A sampler seed per worker and restart: two workers do not sample alike."""
    digest = hashlib.sha256(f"{worker}:{seed}:{finished}".encode()).hexdigest()
    return int(digest[:8], 16)


def find_duplicate(study: Any, trial: Any, params: dict[str, Any], *,
                   poll: float = 1.0) -> Any | None:
    """An earlier trial with the same configuration, finished (waiting for it when
    another worker is still running it), or None."""
    while True:
        running = None
        for other in study.get_trials(deepcopy=False):
            if other.number >= trial.number or other.params != params:
                continue
            if other.state.name in FINISHED:
                return other
            if other.state.name == "RUNNING":
                running = other
        if running is None:
            return None
        time.sleep(poll)


def interrupted_to_retry(study: Any, worker: str) -> list[Any]:
    """This worker's trials that a Ctrl-C stopped, not yet run again."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [t for t in trials if t.state.name == "FAIL" and t.user_attrs.get("worker") == worker
            and t.user_attrs.get("interrupted") and t.number not in retried]


def waiting_state() -> Any:
    import optuna

    return optuna.trial.TrialState.WAITING


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"
