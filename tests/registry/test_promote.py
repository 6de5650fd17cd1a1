"""Promote and rollback: production versions form a stack; every change is recorded.

Each test runs on a folder registry and on an MLflow server (`any_registry`).
"""

import pytest

from kmot.errors import RegistryError
from kmot.registry import Promotion


@pytest.fixture
def registry(any_registry, tmp_path):
    registry = any_registry
    for i in range(1, 4):
        artifact = tmp_path / f"model_{i}.tflite"
        artifact.write_bytes(f"weights {i}".encode())
        registry.push(artifact, name="digits")
    return registry


def test_promote_rollback_round_trip(registry, tmp_path):
    assert registry.current("digits") is None
    assert registry.promote("digits", 1).production
    assert registry.promote("digits", 2).production
    assert registry.current("digits").version == 2
    assert (tmp_path / "v2.tflite") == registry.pull("digits", dest=tmp_path / "v2.tflite")
    assert (tmp_path / "v2.tflite").read_bytes() == b"weights 2"

    back = registry.rollback("digits")
    assert (back.version, back.production) == (1, True)
    assert registry.current("digits").version == 1
    assert registry.show("digits").version == 1
    registry.pull("digits", dest=tmp_path / "now.tflite")
    assert (tmp_path / "now.tflite").read_bytes() == b"weights 1"
    assert [v.production for v in registry.list("digits")] == [True, False, False]

    assert registry.promote("digits", 2).version == 2      # forward again
    assert registry.current("digits").version == 2


def test_rollback_walks_back_through_every_promotion(registry):
    for version in (1, 2, 3, 1):
        registry.promote("digits", version)
    assert [registry.rollback("digits").version for _ in range(3)] == [3, 2, 1]
    with pytest.raises(RegistryError, match=r"Nothing to roll back to for 'digits': v1 is the "
                       r"only version ever promoted\. Expected an earlier production version; "
                       r"promote the version you want with `promote\('digits', VERSION\)`"):
        registry.rollback("digits")
    assert registry.current("digits").version == 1        # a refused rollback changes nothing


def test_rollback_before_any_promotion(registry):
    with pytest.raises(RegistryError, match=r"Nothing to roll back to for 'digits': no version "
                       r"was ever promoted"):
        registry.rollback("digits")


def test_promoting_the_current_version_again_changes_nothing(registry):
    registry.promote("digits", 1)
    registry.promote("digits", 2)
    registry.promote("digits", 2)
    assert registry.rollback("digits").version == 1
    assert len(registry.history("digits")) == 3


def test_history_records_promotions_and_rollbacks(registry):
    registry.promote("digits", 1)
    registry.promote("digits", 3)
    registry.rollback("digits")
    history = registry.history("digits")
    assert [(e.action, e.previous, e.version) for e in history] == [
        ("promote", None, 1), ("promote", 1, 3), ("rollback", 3, 1)]
    assert all(isinstance(e, Promotion) and e.name == "digits" for e in history)
    assert history[0].to_dict()["action"] == "promote"


def test_production_pointers_are_per_model(registry, tmp_path):
    (tmp_path / "audio.tflite").write_bytes(b"audio")
    registry.push(tmp_path / "audio.tflite", name="audio")
    registry.promote("digits", 3)
    registry.promote("audio", 1)
    assert {m.name: m.production_version for m in registry.models()} == {"audio": 1, "digits": 3}
    with pytest.raises(RegistryError, match="Nothing to roll back to for 'audio'"):
        registry.rollback("audio")
    assert registry.current("digits").version == 3


def test_pushing_does_not_move_production(registry, tmp_path):
    registry.promote("digits", 2)
    (tmp_path / "new.tflite").write_bytes(b"newer")
    assert registry.push(tmp_path / "new.tflite", name="digits").production is False
    assert registry.current("digits").version == 2
    assert registry.show("digits").version == 2
