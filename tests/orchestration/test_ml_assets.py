"""The models stage as Dagster runs it, on tiny synthetic marts written into a real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import torch

from models.data import warehouse
from models.recdata import write_frame
from models.recommender import Recommender
from models.settings import get_settings
from tests.models.conftest import make_synthetic_marts

pytestmark = pytest.mark.integration

TINY_MODELS = {
    "RECGEN_PROFILE__EPOCHS": "2",
    "RECGEN_PROFILE__HIDDEN_DIM": "32",
    "RECGEN_PROFILE__N_HEADS": "2",
    "RECGEN_RANKER__EPOCHS": "2",
    "RECGEN_RANKER__HIDDEN_DIM": "32",
    "RECGEN_RANKER__RETRIEVAL_WEIGHT_GRID": "[0.0, 1.0]",
    "RECGEN_EVALUATION__BPR_EPOCHS": "5",
    "RECGEN_TORCH_THREADS": "1",
}


@pytest.fixture
def ml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A RECGEN_HOME whose warehouse holds the synthetic marts (as dbt would have built them)."""
    home = tmp_path / "home"
    monkeypatch.setenv("RECGEN_HOME", str(home))
    monkeypatch.setenv("RECGEN_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("RECGEN_DUCKDB_PATH", str(home / "recgen.duckdb"))
    for key, value in TINY_MODELS.items():
        monkeypatch.setenv(key, value)
    # the assets apply RECGEN_TORCH_THREADS to the whole process: give later tests their thread count back
    threads = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    frames, _ = make_synthetic_marts()
    with warehouse.connect(home / "recgen.duckdb") as con:
        for name, frame in frames.items():
            write_frame(con, f"marts.{name}", frame)
    return home


def _materialize() -> dg.ExecuteInProcessResult:
    from orchestration.assets.ml import ml_assets
    from orchestration.checks.ml import ml_checks
    from orchestration.resources import RecgenResource

    return dg.materialize(
        [*ml_assets, *ml_checks], resources={"recgen": RecgenResource()}, raise_on_error=False
    )


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def test_models_stage_materializes_registers_and_checks(ml_home: Path) -> None:
    result = _materialize()
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {
        "item_embeddings", "profile_model", "user_profiles", "retrieval_index", "ranker", "baselines", "evaluation",
    }  # fmt: skip
    # the blocking check may fail on this tiny world (item-kNN is strong there); then it is the only failed step
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed <= {"evaluation_full_stack_beats_baselines"}
    con = duckdb.connect(str(ml_home / "recgen.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from ml.item_embeddings").fetchone()[0] == 80
        assert con.execute("select count(*) from ml.user_profiles").fetchone()[0] == 60
        evaluation = con.execute("select * from ml.evaluation where split = 'test'").df()
        registry = con.execute("select name, is_champion from ml.registry").df()
        recs = con.execute("select count(distinct model) from ml.eval_recommendations").fetchone()[0]
    finally:
        con.close()
    assert evaluation["model"].tolist() == ["popularity", "itemknn", "bpr", "two_tower", "full_stack"]
    assert recs == 5
    assert {
        "profile_model",
        "ranker",
        "full_stack",
        "popularity",
        "itemknn",
        "bpr",
        "retrieval_index",
    } <= set(registry["name"])
    assert registry[registry["name"] == "full_stack"]["is_champion"].sum() == 1
    settings = get_settings()
    assert (
        pd.read_csv(settings.reports_dir / "evaluation.csv")["model"].tolist() == evaluation["model"].tolist()
    )

    # the check compares the same numbers the table holds, and says so
    (check,) = result.get_asset_check_evaluations()
    table = evaluation.set_index("model")["ndcg@10"]
    assert check.passed == bool(table["full_stack"] > table[["popularity", "itemknn", "bpr"]].max())
    assert result.success == check.passed
    assert f"{table['full_stack']:.4f}" in check.description

    meta = _metadata(result, "evaluation")
    assert meta["promoted_to_champion"] is True
    # the served champion loads from the registry and answers
    recommender = Recommender.load(settings)
    assert len(recommender.recommend(user_id="u001", k=5)) == 5


def test_second_run_reuses_cached_embeddings(ml_home: Path) -> None:
    from orchestration.assets.ml import item_embeddings
    from orchestration.resources import RecgenResource

    first = dg.materialize([item_embeddings], resources={"recgen": RecgenResource()})
    second = dg.materialize([item_embeddings], resources={"recgen": RecgenResource()})
    assert _metadata(first, "item_embeddings")["n_encoded"] == 80
    # nothing changed in the catalog: every embedding comes from ml.item_embeddings
    assert _metadata(second, "item_embeddings")["n_encoded"] == 0
    assert _metadata(second, "item_embeddings")["n_reused_from_cache"] == 80


def test_daily_scores_feed_the_drift_reports_model_score(ml_home: Path) -> None:
    from orchestration.assets.monitoring import daily_scores, drift_report
    from orchestration.resources import RecgenResource

    assert _materialize().get_asset_materialization_events()  # the champion full_stack model
    con = duckdb.connect(str(ml_home / "recgen.duckdb"), read_only=True)
    try:
        day, impressions = con.execute(
            "select cast(event_date as date), count(*) from marts.interactions group by 1 order by 1 desc limit 1"
        ).fetchone()
        n_valid = con.execute("select count(*) from marts.interactions where split = 'valid'").fetchone()[0]
    finally:
        con.close()
    result = dg.materialize(
        [daily_scores, drift_report], resources={"recgen": RecgenResource()}, partition_key=day.isoformat()
    )
    assert result.success
    scores_meta, drift_meta = _metadata(result, "daily_scores"), _metadata(result, "drift_report")

    con = duckdb.connect(str(ml_home / "recgen.duckdb"), read_only=True)
    try:
        stored = con.execute(
            "select count(*), count(score), any_value(model_version) from monitoring.daily_scores "
            "where event_date = ?",
            [day],
        ).fetchone()
        reference = con.execute(
            "select count(*), any_value(split) from monitoring.score_reference where model_version = ?",
            [stored[2]],
        ).fetchone()
        score_row = con.execute(
            "select count(*) from monitoring.drift_results where run_date = ? and column_name = 'model_score'",
            [day],
        ).fetchone()
        champion = con.execute(
            "select version from ml.registry where name = 'full_stack' and is_champion"
        ).fetchone()[0]
    finally:
        con.close()
    # every impression of the day scored by the champion; its reference is the validation window
    assert stored == (impressions, impressions, champion) and scores_meta["rows"] == impressions
    assert reference == (n_valid, "valid")
    # the score column is tested for drift, not skipped
    assert score_row == (1,)
    assert "model_score" not in drift_meta["skipped_columns"]
    assert drift_meta["score_model_version"] == champion

    # a second run of the same day replaces its rows and reuses the version's reference
    again = dg.materialize(
        [daily_scores], resources={"recgen": RecgenResource()}, partition_key=day.isoformat()
    )
    assert _metadata(again, "daily_scores")["reference_rows_written"] == 0
    con = duckdb.connect(str(ml_home / "recgen.duckdb"), read_only=True)
    try:
        assert con.execute(
            "select count(*) from monitoring.daily_scores where event_date = ?", [day]
        ).fetchone() == (impressions,)
    finally:
        con.close()
