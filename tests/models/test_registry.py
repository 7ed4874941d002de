"""The model registry: versioned directories, the champion alias and its DuckDB mirror."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from models.registry import ModelRegistry, data_snapshot_id, frames_snapshot_stats


def _writer(payload: str):
    def write(path: Path) -> None:
        (path / "weights.txt").write_text(payload)

    return write


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "artifacts", tmp_path / "warehouse.duckdb")


def test_register_writes_a_complete_version(registry: ModelRegistry) -> None:
    v = registry.register(
        "ranker",
        _writer("w1"),
        metrics={"ndcg@10": 0.2, "auc": float("nan")},
        config={"hidden_dim": 8},
        feature_schema={"dense": ["a"]},
        data_snapshot_id="snap",
    )
    assert (v.path / "weights.txt").read_text() == "w1"
    for name in ("meta.json", "config.json", "feature_schema.json", "metrics.json"):
        assert (v.path / name).exists()
    # NaN is not valid JSON: it is stored as null and reads back as NaN through ``metric``
    assert json.loads((v.path / "metrics.json").read_text())["auc"] is None
    assert registry.get("ranker", v.version).metric("ndcg@10") == pytest.approx(0.2)
    assert registry.latest("ranker") == registry.get("ranker", v.version)


def test_champion_moves_only_on_improvement(registry: ModelRegistry) -> None:
    first = registry.register("full_stack", _writer("a"), metrics={"ndcg@10": 0.30}, data_snapshot_id="s1")
    assert registry.champion("full_stack") is None
    assert registry.promote_if_better("full_stack", first.version)  # no champion yet: the first one wins
    worse = registry.register("full_stack", _writer("b"), metrics={"ndcg@10": 0.25}, data_snapshot_id="s1")
    assert not registry.promote_if_better("full_stack", worse.version)
    equal = registry.register("full_stack", _writer("c"), metrics={"ndcg@10": 0.30}, data_snapshot_id="s1")
    assert not registry.promote_if_better("full_stack", equal.version)  # a tie is not an improvement
    assert registry.load_champion("full_stack").version == first.version
    better = registry.register("full_stack", _writer("d"), metrics={"ndcg@10": 0.31}, data_snapshot_id="s1")
    assert registry.promote_if_better("full_stack", better.version)
    assert registry.load_champion("full_stack").version == better.version
    assert (registry.load_champion("full_stack").path / "weights.txt").read_text() == "d"


def test_a_version_measured_on_new_data_replaces_the_champion(registry: ModelRegistry) -> None:
    # figures from different data are not comparable; a model of the newer data (which knows the new items) wins
    old = registry.register("full_stack", _writer("a"), metrics={"ndcg@10": 0.5}, data_snapshot_id="old")
    registry.promote_if_better("full_stack", old.version)
    new = registry.register("full_stack", _writer("b"), metrics={"ndcg@10": 0.1}, data_snapshot_id="new")
    assert registry.promote_if_better("full_stack", new.version)


def test_ml_registry_table_mirrors_the_champion(registry: ModelRegistry, tmp_path: Path) -> None:
    a = registry.register("bpr", _writer("a"), metrics={"ndcg@10": 0.1}, data_snapshot_id="s")
    b = registry.register("bpr", _writer("b"), metrics={"ndcg@10": 0.2}, data_snapshot_id="s")
    registry.promote_if_better("bpr", a.version)
    registry.promote_if_better("bpr", b.version)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "select version, is_champion, metrics, data_snapshot_id from ml.registry order by version"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(a.version, False), (b.version, True)]
    assert json.loads(rows[1][2])["ndcg@10"] == pytest.approx(0.2)
    assert rows[1][3] == "s"


def test_load_champion_without_one_says_so(registry: ModelRegistry) -> None:
    with pytest.raises(FileNotFoundError, match="no champion"):
        registry.load_champion("full_stack")


def test_snapshot_id_changes_with_the_data() -> None:
    frames = {
        "interactions": pd.DataFrame({"event_ts": pd.to_datetime(["2026-10-01", "2026-10-02"])}),
        "user_histories": pd.DataFrame({"event_ts": pd.to_datetime(["2026-10-01"])}),
        "training_samples": pd.DataFrame({"event_ts": pd.to_datetime(["2026-10-01"])}),
        "item_features": pd.DataFrame({"published_at": pd.to_datetime(["2026-09-01"])}),
        "user_features": pd.DataFrame({"last_event_ts": pd.to_datetime(["2026-10-02"])}),
    }
    base = data_snapshot_id(frames_snapshot_stats(frames))
    assert base == data_snapshot_id(frames_snapshot_stats(frames))  # deterministic
    more = dict(frames, interactions=pd.concat([frames["interactions"]] * 2))
    assert data_snapshot_id(frames_snapshot_stats(more)) != base
