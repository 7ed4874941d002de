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
    # one seed: the orchestration tests check the wiring; tests/models/test_evaluation.py runs several seeds
    "RECGEN_EVALUATION__SEEDS": "[42]",
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
    from models.evaluation import BASELINE_NAMES, MODEL_NAMES, TABLE_COLUMNS

    result = _materialize()
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    (check,) = result.get_asset_check_evaluations()
    assert materialized - {"full_stack_champion"} == {
        "item_embeddings", "profile_model", "user_profiles", "retrieval_index", "ranker", "baselines", "evaluation",
    }  # fmt: skip
    # the champion asset runs unless the full stack lost (a failed check of ERROR severity blocks it)
    lost = not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert ("full_stack_champion" in materialized) == (not lost)
    # the blocking check may fail on this tiny world (item-kNN is strong there); then it is the only failed step
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed <= {"evaluation_full_stack_beats_baselines"}
    assert bool(failed) == lost
    con = duckdb.connect(str(ml_home / "recgen.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from ml.item_embeddings").fetchone()[0] == 80
        assert con.execute("select count(*) from ml.user_profiles").fetchone()[0] == 60
        evaluation = con.execute("select * from ml.evaluation where split = 'test'").df()
        registry = con.execute("select name, is_champion from ml.registry").df()
        recs = con.execute("select count(distinct model) from ml.eval_recommendations").fetchone()[0]
    finally:
        con.close()
    assert evaluation["model"].tolist() == list(MODEL_NAMES)
    assert set(TABLE_COLUMNS) <= set(evaluation.columns)
    assert recs == len(MODEL_NAMES)
    assert {
        "profile_model",
        "ranker",
        "full_stack",
        "popularity",
        "itemknn",
        "bpr",
        "retrieval_index",
    } <= set(registry["name"])
    # an empty registry: a win or a tie makes the first champion, a loss none
    assert registry[registry["name"] == "full_stack"]["is_champion"].sum() == int(not lost)
    settings = get_settings()
    assert (
        pd.read_csv(settings.reports_dir / "evaluation.csv")["model"].tolist() == evaluation["model"].tolist()
    )
    # ndcg@10 means full-ranking NDCG: the stacked ranker's valid figure is the full stack's full-ranking NDCG
    # on valid (relevant items outside the candidates count as misses); a pair ranker's over one slate's items
    # would be named slate_ndcg@10
    from models.registry import ModelRegistry

    ranker = ModelRegistry.from_settings(settings).latest("ranker")
    assert ranker is not None and ranker.config["kind"] == "stacked"
    assert "valid_ndcg@10" in ranker.metrics and "ndcg@10" not in ranker.metrics
    meta = _metadata(result, "evaluation")
    assert Path(str(meta["plot"])).read_bytes()[:4] == b"\x89PNG"
    assert meta["promoted_to_champion"] is False  # evaluation registers; full_stack_champion promotes

    # the check reads the interval the table holds, and says so
    full = evaluation.set_index("model").loc["full_stack"]
    assert check.passed == bool(full["delta_ci_low"] > 0)
    assert result.success == (not lost)  # only a loss (ERROR severity) fails the run
    assert check.passed or f"{full['delta_ci_high']:+.4f}" in check.description
    best = evaluation[evaluation["model"].isin(BASELINE_NAMES)]["ndcg@10"].max()
    assert full["delta_ndcg@10"] == pytest.approx(full["ndcg@10"] - best)
    assert f"{full['delta_ci_low']:+.4f}" in check.description
    if not lost:
        recommender = Recommender.load(settings)  # the served champion loads from the registry and answers
        assert len(recommender.recommend(user_id="u001", k=5)) == 5


def _promote_latest_full_stack() -> None:
    """Tests that need a served champion on this tiny world (where the gate may fail) promote it by hand."""
    from models.registry import ModelRegistry

    registry = ModelRegistry.from_settings(get_settings())
    if registry.champion("full_stack") is None:
        latest = registry.latest("full_stack")
        assert latest is not None
        registry.promote_if_better("full_stack", latest.version)


def test_promotion_is_blocked_when_the_check_fails(ml_home: Path) -> None:
    # A champion v1 exists; a new evaluation whose interval reaches below 0 must leave it where it was, both
    # when Dagster runs the blocking check first (full_stack_champion is skipped) and when the champion asset
    # is materialized on its own (its own gate refuses).
    from models.registry import ModelRegistry
    from orchestration.assets.ml import full_stack_champion
    from orchestration.resources import RecgenResource

    first = _materialize()
    _promote_latest_full_stack()
    registry = ModelRegistry.from_settings(get_settings())
    champion = registry.champion("full_stack")
    assert champion is not None
    con = duckdb.connect(str(ml_home / "recgen.duckdb"))
    # a later evaluation that did not win (its interval holds 0): a tie never replaces a champion
    later = registry.register(
        "full_stack", lambda path: path.mkdir(parents=True, exist_ok=True), metrics={"ndcg@10": 1.0}
    )
    con.execute(
        "update ml.evaluation set full_stack_version = ?, delta_ci_low = -0.02, delta_ci_high = 0.01",
        [later.version],
    )
    con.close()
    lone = dg.materialize([full_stack_champion], resources={"recgen": RecgenResource()})
    assert _metadata(lone, "full_stack_champion")["promoted_to_champion"] is False
    assert registry.champion("full_stack").version == champion.version  # type: ignore[union-attr]

    # the same table with an interval above 0: now the later version becomes champion
    con = duckdb.connect(str(ml_home / "recgen.duckdb"))
    con.execute("update ml.evaluation set delta_ci_low = 0.01, delta_ci_high = 0.05")
    con.close()
    assert dg.materialize([full_stack_champion], resources={"recgen": RecgenResource()}).success
    assert registry.champion("full_stack").version == later.version  # type: ignore[union-attr]
    assert first.get_asset_check_evaluations()  # the first run did evaluate the blocking check


def test_blocking_check_gates_the_champion_in_one_run(ml_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Dagster's own gating: with the check failing (an interval below 0), the run never materializes
    # full_stack_champion and the champion stays unset.
    import models.evaluation as evaluation
    from models.registry import ModelRegistry

    original = evaluation.compare_to_best_baseline

    def losing(*args: object, **kwargs: object) -> dict[str, object]:
        out = original(*args, **kwargs)  # type: ignore[arg-type]
        return {**out, "delta_ci_low": -1.0, "delta_ci_high": -0.5}

    monkeypatch.setattr(evaluation, "compare_to_best_baseline", losing)
    result = _materialize()
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.blocking
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "evaluation" in materialized and "full_stack_champion" not in materialized
    assert ModelRegistry.from_settings(get_settings()).champion("full_stack") is None


def test_a_tie_warns_without_blocking_and_makes_only_a_first_champion(
    ml_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An interval holding 0: the check fails with WARN severity, the run goes on, and the empty registry gets
    # its first champion; a later tie does not replace that champion.
    import models.evaluation as evaluation
    from models.registry import ModelRegistry
    from orchestration.assets.ml import full_stack_champion
    from orchestration.resources import RecgenResource

    original = evaluation.compare_to_best_baseline

    def tied(*args: object, **kwargs: object) -> dict[str, object]:
        out = original(*args, **kwargs)  # type: ignore[arg-type]
        return {**out, "delta_ci_low": -0.01, "delta_ci_high": 0.02}

    monkeypatch.setattr(evaluation, "compare_to_best_baseline", tied)
    result = _materialize()
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "full_stack_champion" in materialized
    registry = ModelRegistry.from_settings(get_settings())
    first = registry.champion("full_stack")
    assert first is not None and _metadata(result, "full_stack_champion")["verdict"] == "tie"

    later = registry.register(
        "full_stack", lambda path: path.mkdir(parents=True, exist_ok=True), metrics={"ndcg@10": 1.0}
    )
    con = duckdb.connect(str(ml_home / "recgen.duckdb"))
    con.execute("update ml.evaluation set full_stack_version = ?", [later.version])
    con.close()
    lone = dg.materialize([full_stack_champion], resources={"recgen": RecgenResource()})
    assert _metadata(lone, "full_stack_champion")["promoted_to_champion"] is False
    assert registry.champion("full_stack").version == first.version  # type: ignore[union-attr]


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

    assert _materialize().get_asset_materialization_events()
    _promote_latest_full_stack()  # the champion full_stack model
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


def test_downstream_assets_load_the_version_their_upstream_asset_materialized(ml_home: Path) -> None:
    # lineage: user_profiles reads the profile model the profile_model asset produced in this instance, not a
    # newer version registered outside Dagster (a benchmark, a notebook); with no such materialization in the
    # instance it falls back to the registry's newest, with a warning
    from models.registry import ModelRegistry
    from models.retrieval.two_tower import TwoTowerRetriever
    from orchestration.assets.ml import ml_assets
    from orchestration.resources import RecgenResource

    instance = dg.DagsterInstance.ephemeral()
    resources = {"recgen": RecgenResource()}
    first = dg.materialize(
        ml_assets, selection=["item_embeddings", "profile_model"], resources=resources, instance=instance
    )
    produced = _metadata(first, "profile_model")["version"]
    registry = ModelRegistry.from_settings(get_settings())
    encoder = TwoTowerRetriever.load(registry.get("profile_model", str(produced)).path)
    outside = registry.register("profile_model", encoder.save, metrics={"ndcg@10": 0.0})
    assert registry.latest("profile_model").version == outside.version != produced  # type: ignore[union-attr]

    same = dg.materialize(ml_assets, selection=["user_profiles"], resources=resources, instance=instance)
    assert _metadata(same, "user_profiles")["profile_model_version"] == produced
    elsewhere = dg.materialize(ml_assets, selection=["user_profiles"], resources=resources)
    assert _metadata(elsewhere, "user_profiles")["profile_model_version"] == outside.version
