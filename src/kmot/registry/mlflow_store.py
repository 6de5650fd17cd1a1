"""The MLflow backend of `Registry`: versions in a tracking server's model registry.

What kmot keeps where, for a model ``digits``:

- each push is a run of the experiment ``kmot-registry`` holding the file as
  ``artifact/<file name>`` and the report as ``kmot/report.json``, with the
  report's metrics summary as the run's metrics (for MLflow's UI);
- the version is a model version of the registered model ``digits`` created from
  that run; its ``kmot.*`` tags hold the sha256, size, file name, time, metrics,
  metadata and tags (what `list` and `show` read), and it is created last, so a
  version always has its files;
- production is the registered model's alias ``production``;
- the production history is a registered-model tag per promote or rollback
  (``kmot.event.000001``, ...), and the production stack is replayed from it. Each
  promote and rollback holds `kmot.registry.mlflow_lock` while it reads the history
  and writes the alias, then the event. An alias moved outside kmot (MLflow's UI,
  or a kmot killed between those two writes) is recorded as a promotion (or, if it
  points at the previous production version, a rollback) by the next one.

Every value read back is checked as the folder registry checks its index
(`kmot.registry.mlflow_tags`): the server's tags can be edited by anyone allowed
to write them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from kmot._files import copy_atomically, sha256_file, write_atomic
from kmot.errors import RegistryError
from kmot.registry.messages import (
    nothing_to_roll_back,
    now,
    unknown_name,
    unknown_version,
    unreadable_artifact,
)
from kmot.registry.mlflow_client import Server
from kmot.registry.mlflow_lock import locked
from kmot.registry.mlflow_tags import (
    MODEL_TAG,
    PRODUCTION,
    REPORT,
    REPORT_TAG,
    decode_events,
    decode_version,
    event_tag,
    production_of,
    replay,
    version_tags,
)
from kmot.registry.objects import copy_verified
from kmot.registry.records import (
    GcResult,
    ModelVersion,
    Promotion,
    RegisteredModel,
    VerifyProblem,
    VerifyResult,
)
from kmot.registry.reports import summarize

__all__ = ["ARTIFACT_DIR", "EXPERIMENT", "MlflowBackend"]

EXPERIMENT = "kmot-registry"
ARTIFACT_DIR = "artifact"
_MISSING = "RESOURCE_DOES_NOT_EXIST"
_METRIC_KEY = re.compile(r"[\w./ -]{1,250}")       # what MLflow accepts as a metric name
_PAGE = 1000


class MlflowBackend:
    """A registry in an MLflow tracking server's model registry.

    Args:
        root: ``mlflow://host:port`` (``mlflow+https://host[:port][/path]`` for TLS).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.server = Server(root)

    @property
    def _client(self) -> Any:
        return self.server.client

    # -- reading the server ------------------------------------------------------

    def _kmot_models(self) -> list[Any]:
        found, token = [], None
        while True:
            page = self._client.search_registered_models(max_results=_PAGE, page_token=token)
            found += [m for m in page if MODEL_TAG in (m.tags or {})]
            token = page.token
            if not token:
                return sorted(found, key=lambda m: m.name)

    def _model(self, name: str) -> Any:
        try:
            model = self._client.get_registered_model(name)
        except Exception as err:
            if self.server.code(err) != _MISSING:
                raise
            model = None
        if model is None or MODEL_TAG not in (model.tags or {}):
            raise unknown_name(name, [m.name for m in self._kmot_models()][:20], self.root)
        return model

    def _versions(self, name: str) -> list[Any]:
        """The model versions kmot pushed to ``name``, oldest first (others are skipped)."""
        found, token = [], None
        while True:
            page = self._client.search_model_versions(
                f"name='{name}'", max_results=_PAGE, page_token=token)
            found += [v for v in page if "kmot.sha256" in (v.tags or {})]
            token = page.token
            if not token:
                return sorted(found, key=lambda v: int(v.version))

    def _state(self, name: str) -> tuple[Any, list[Any], int | None]:
        """The registered model, its kmot versions and its production version."""
        model = self._model(name)
        versions = self._versions(name)
        if not versions:
            raise unknown_name(name, [m.name for m in self._kmot_models()][:20], self.root)
        return model, versions, production_of(model)

    def _pick(self, name: str, versions: list[Any], version: int) -> Any:
        for mv in versions:
            if int(mv.version) == version:
                return mv
        raise unknown_version(name, version, int(versions[-1].version))

    def _report(self, mv: Any) -> str:
        with tempfile.TemporaryDirectory(prefix="kmot-report-") as tmp:
            try:
                path = self._client.download_artifacts(mv.run_id, REPORT, tmp)
            except Exception as err:
                if self.server.code(err) != _MISSING:
                    raise
                raise RegistryError(
                    f"The report of {mv.name} v{mv.version} is missing on the MLflow server at "
                    f"{self.root}. Expected {REPORT} in run {mv.run_id}, as kmot pushed it; "
                    f"restore it or push the version again. Received: missing file") from None
            return Path(path).read_text(encoding="utf-8")

    def _decode(self, mv: Any, production: int | None, *, report: bool) -> ModelVersion:
        text = self._report(mv) if report and REPORT_TAG in (mv.tags or {}) else None
        return decode_version(mv, production, text, root=self.root)

    # -- writing ------------------------------------------------------------------

    def _experiment(self) -> str:
        found = self._client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        try:
            return self._client.create_experiment(EXPERIMENT)
        except Exception as err:          # another push created it meanwhile
            if self.server.code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
            return self._client.get_experiment_by_name(EXPERIMENT).experiment_id

    def _register(self, name: str) -> None:
        try:
            self._client.create_registered_model(
                name, tags={MODEL_TAG: "1"}, description="Pushed by kmot (kmot registry).")
        except Exception as err:
            if self.server.code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
            self._client.set_registered_model_tag(name, MODEL_TAG, "1")

    def push(self, artifact: Path, *, name: str, source: str, report: dict[str, Any] | None,
             metadata: dict[str, Any], tags: tuple[str, ...]) -> ModelVersion:
        with self.server.errors(), tempfile.TemporaryDirectory(prefix="kmot-push-") as tmp:
            staged = Path(tmp, ARTIFACT_DIR, source)
            staged.parent.mkdir()
            try:
                # Hashed as it is copied: the digest is that of the bytes uploaded, even
                # if the artifact changes meanwhile.
                sha256, size = copy_atomically(artifact, staged)
            except OSError as err:
                if err.filename is not None and os.fspath(err.filename) == os.fspath(artifact):
                    raise unreadable_artifact(err) from None
                raise
            if report is not None:
                write_atomic(Path(tmp, REPORT), json.dumps(report))
            metrics = summarize(report, source=source, size_bytes=size)
            created = now()
            client = self._client
            run = client.create_run(self._experiment(), run_name=f"{name} push",
                                    tags={"kmot.model": name})
            run_id = run.info.run_id
            try:
                client.log_artifacts(run_id, tmp)
                stamp = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[
                    self.server.mlflow.entities.Metric(key, value, stamp, 0)
                    for key, value in metrics.items() if _METRIC_KEY.fullmatch(key)])
                client.update_run(run_id, status="FINISHED")
                self._register(name)
                mv = client.create_model_version(
                    name, source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}", run_id=run_id,
                    tags=version_tags(sha256, size, source, created, report is not None,
                                       metrics, metadata, tags),
                    description=f"{source}, sha256 {sha256}", await_creation_for=0)
            except BaseException:
                with contextlib.suppress(Exception):     # no version: its run is a leftover
                    client.delete_run(run_id)
                raise
        return ModelVersion(name, int(mv.version), sha256, size, created, source, report,
                            metrics, metadata, tags, False)

    def _history(self, model: Any) -> list[tuple[int, Promotion]]:
        return decode_events(model, root=self.root)

    def _write_event(self, name: str, seq: int, action: str, version: int,
                     previous: int | None) -> None:
        self._client.set_registered_model_tag(
            name, *event_tag(seq, action, version, previous, now()))

    def _stack(self, name: str) -> tuple[list[int], int]:
        """The production stack and the last event number, with the alias reconciled.

        Call with the lock held.
        """
        model = self._client.get_registered_model(name)
        events = self._history(model)
        stack = replay(p for _, p in events)
        seq = events[-1][0] if events else 0
        alias = production_of(model)
        if alias is not None and (not stack or stack[-1] != alias):
            rolled_back = len(stack) >= 2 and stack[-2] == alias
            seq += 1
            self._write_event(name, seq, "rollback" if rolled_back else "promote", alias,
                              stack[-1] if stack else None)
            stack = stack[:-1] if rolled_back else [*stack, alias]
        return stack, seq

    def promote(self, name: str, version: int) -> ModelVersion:
        with self.server.errors():
            _, versions, _ = self._state(name)
            mv = self._pick(name, versions, version)
            with locked(self.server, name):
                stack, seq = self._stack(name)
                self._client.set_registered_model_alias(name, PRODUCTION, str(version))
                if not stack or stack[-1] != version:
                    self._write_event(name, seq + 1, "promote", version,
                                      stack[-1] if stack else None)
            return self._decode(mv, version, report=True)

    def rollback(self, name: str) -> ModelVersion:
        with self.server.errors():
            _, versions, _ = self._state(name)
            with locked(self.server, name):
                stack, seq = self._stack(name)
                if len(stack) < 2:
                    raise nothing_to_roll_back(name, stack)
                self._client.set_registered_model_alias(name, PRODUCTION, str(stack[-2]))
                self._write_event(name, seq + 1, "rollback", stack[-2], stack[-1])
            return self._decode(self._pick(name, versions, stack[-2]), stack[-2], report=True)

    # -- reading ------------------------------------------------------------------

    def list(self, name: str | None) -> list[ModelVersion]:
        with self.server.errors():
            if name is not None:
                _, versions, production = self._state(name)
                return [self._decode(mv, production, report=True) for mv in versions]
            return [self._decode(mv, production_of(model), report=True)
                    for model in self._kmot_models() for mv in self._versions(model.name)]

    def models(self) -> list[RegisteredModel]:
        with self.server.errors():
            found = []
            for model in self._kmot_models():
                versions = [self._decode(mv, None, report=False)
                            for mv in self._versions(model.name)]
                if versions:
                    found.append(RegisteredModel(
                        model.name, len(versions), versions[-1].version, production_of(model),
                        max(v.created_at for v in versions)))
            return found

    def show(self, name: str, version: int | None) -> ModelVersion:
        with self.server.errors():
            _, versions, production = self._state(name)
            if version is None:
                version = production or int(versions[-1].version)
            return self._decode(self._pick(name, versions, version), production, report=True)

    def current(self, name: str) -> ModelVersion | None:
        with self.server.errors():
            _, versions, production = self._state(name)
            if production is None:
                return None
            return self._decode(self._pick(name, versions, production), production, report=True)

    def history(self, name: str) -> list[Promotion]:
        with self.server.errors():
            model, _, _ = self._state(name)
            return [p for _, p in self._history(model)]

    def _download(self, mv: Any, source: str, folder: str) -> Path | None:
        """The version's artifact downloaded into ``folder``; None if the server has none."""
        try:
            return Path(self._client.download_artifacts(
                mv.run_id, f"{ARTIFACT_DIR}/{source}", folder))
        except Exception as err:
            if self.server.code(err) != _MISSING:
                raise
            return None

    def pull(self, chosen: ModelVersion, target: Path, *, dest: str | os.PathLike) -> None:
        fix = ("Push a trusted copy of the artifact as a new version (and promote it), or pull "
               "another version")
        with self.server.errors(), tempfile.TemporaryDirectory(prefix="kmot-pull-") as tmp:
            mv = self._client.get_model_version(chosen.name, str(chosen.version))
            where = f"{mv.source}/{chosen.source}"
            local = self._download(mv, chosen.source, tmp)
            if local is None:
                raise RegistryError(
                    f"The stored artifact of {chosen.label} is missing on the MLflow server. "
                    f"Expected {where} (sha256 {chosen.sha256}). {fix}. Nothing was written. "
                    f"Received: missing file")
            found, size = copy_verified(local, target, sha256=chosen.sha256, dest=dest,
                                        unreadable=f"Cannot read the downloaded artifact {local}.")
        if found != chosen.sha256:
            raise RegistryError(
                f"Checksum mismatch: the stored artifact of {chosen.label} is corrupted. "
                f"Expected sha256 {chosen.sha256} ({chosen.size_bytes} bytes). Received: "
                f"sha256 {found} ({size} bytes) in {where}. {fix}. Nothing was written to "
                f"{target}.")

    # -- upkeep -------------------------------------------------------------------

    def gc(self, *, grace: float, dry_run: bool) -> GcResult:
        raise RegistryError(
            f"gc is a feature of the folder registry: it removes files that killed pushes "
            f"left in the registry folder. Expected a registry folder for `gc`; an MLflow "
            f"server's artifacts are the server's to clean (a killed push leaves at most a "
            f"run of {EXPERIMENT!r} that no version refers to: delete it in MLflow, and "
            f"`mlflow gc` removes deleted runs' files). Received: root={self.root!r}")

    def verify(self) -> VerifyResult:
        with self.server.errors():
            checked, problems, count = 0, [], 0
            for model in self._kmot_models():
                for mv in self._versions(model.name):
                    version = self._decode(mv, None, report=False)
                    count += 1
                    with tempfile.TemporaryDirectory(prefix="kmot-verify-") as tmp:
                        local = self._download(mv, version.source, tmp)
                        found = found_bytes = problem = None
                        if local is None:
                            problem = "missing"
                        else:
                            found_bytes, found = local.stat().st_size, sha256_file(local)
                            checked += found_bytes
                            if (found, found_bytes) != (version.sha256, version.size_bytes):
                                problem = "mismatch"
                    if problem is not None:
                        problems.append(VerifyProblem(
                            version.sha256, version.size_bytes, problem, (version.label,),
                            f"{mv.source}/{version.source}", found, found_bytes))
            return VerifyResult(count, count, checked, tuple(problems))
