"""The generator's registry: a lower validation loss wins only against a loss on the same evaluation set."""

from __future__ import annotations

from pathlib import Path

from models.generation.artifacts import REGISTRY_NAME, register_trained
from models.generation.train import TrainResult
from models.registry import ModelRegistry


def _result(tmp_path: Path, name: str, loss: float, heldout: tuple[str, ...]) -> TrainResult:
    path = tmp_path / name
    path.mkdir()
    (path / "weights.bin").write_bytes(b"x")
    return TrainResult(
        path, f"lm-{name}", "control", None, 5.0, loss, 10, 100, 1.0, "cpu", heldout_items=heldout
    )


def test_a_lower_loss_wins_only_on_the_same_evaluation_set(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    first = register_trained(registry, _result(tmp_path, "a", 0.8, ("i1", "i2")))
    assert registry.champion(REGISTRY_NAME).version == first.version
    worse = register_trained(registry, _result(tmp_path, "b", 0.9, ("i1", "i2")))
    assert registry.champion(REGISTRY_NAME).version == first.version != worse.version
    # other held-out items: the losses are not comparable, so the newer model replaces the champion
    other = register_trained(registry, _result(tmp_path, "c", 0.95, ("i3",)))
    assert registry.champion(REGISTRY_NAME).version == other.version
    better = register_trained(registry, _result(tmp_path, "d", 0.5, ("i3",)))
    assert registry.champion(REGISTRY_NAME).version == better.version
