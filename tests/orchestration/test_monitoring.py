"""The Dagster wiring of the reports: assets materialize against a real DuckDB file, checks read what they wrote,
and the drift sensor requests retraining once per drift result.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from models.monitoring.drift import ColumnDrift, DriftResult, save_drift_result
from orchestration.assets.monitoring import choose_model, daily_scores, monitoring_assets
from orchestration.checks.monitoring import monitoring_checks
from orchestration.drift_sensor import build_drift_sensor
from orchestration.resources import RecgenResource
from tests.models.monitoring.conftest import make_recs, make_world

pytestmark = pytest.mark.integration


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RecgenResource, Path]:
    """A DuckDB file with the three marts and ml.eval_recommendations of two models; reports under tmp."""
    reports = tmp_path / "reports"
    monkeypatch.setenv("RECGEN_REPORTS_DIR", str(reports))
    monkeypatch.setenv("RECGEN_MONITORING__MIN_GROUP_USERS", "5")
    world = make_world(last_day_click_scale=0.3)
    biased, _ = make_recs(world, group_quality={"55+": 0.0}, independent_penalty=1.5, seed=8)
    weak, _ = make_recs(world, group_quality=dict.fromkeys(("18-34", "35-54", "55+"), 0.0), seed=9)
    recs = pd.concat([biased.assign(model="full_stack"), weak.assign(model="popularity")], ignore_index=True)
    recs["split"] = "test"
    db = tmp_path / "home" / "recgen.duckdb"
    db.parent.mkdir(parents=True)
    con = duckdb.connect(str(db))
    con.execute("create schema marts; create schema ml")
    for name in ("interactions", "user_features", "item_features"):
        con.register("frame", world[name])
        con.execute(f"create table marts.{name} as select * from frame")
        con.unregister("frame")
    con.register("frame", recs)
    con.execute("create table ml.eval_recommendations as select * from frame")
    con.close()
    return RecgenResource(home=str(tmp_path / "home"), duckdb_path=str(db)), reports


def test_report_assets_and_checks(warehouse) -> None:
    recgen, reports = warehouse
    # no champion model in this warehouse: everything but the champion's daily scores, for the last day
    report_assets = [asset for asset in monitoring_assets if asset is not daily_scores]
    result = dg.materialize(
        [*report_assets, *monitoring_checks], resources={"recgen": recgen}, partition_key="2026-10-08"
    )
    assert result.success

    drift_meta = result.asset_materializations_for_node("drift_report")[0].metadata
    assert drift_meta["drift_detected"].value is True  # clicks dropped by 70 % on the last day
    assert Path(drift_meta["report_path"].value) == (reports / "drift" / "2026-10-08.html").resolve()
    assert Path(drift_meta["report_path"].value).exists()

    quality_meta = result.asset_materializations_for_node("quality_report")[0].metadata
    assert quality_meta["model"].value == "full_stack"
    assert quality_meta["failed_metrics"].value == {}
    assert Path(quality_meta["report_path"].value).exists()

    fairness_meta = result.asset_materializations_for_node("fairness_report")[0].metadata
    assert fairness_meta["passed"].value == "False"
    assert Path(fairness_meta["report_path"].value).exists()

    # Each report's PNG charts: linked from the asset's metadata, files beside the HTML, listed in markdown.
    for meta, names in (
        (drift_meta, {"columns"}),
        (quality_meta, {"metrics_at_k", "metrics"}),
        (fairness_meta, {"exposure", "ndcg_by_group", "rerank_tradeoff"}),
    ):
        report = Path(meta["report_path"].value)
        for name in names:
            chart = Path(meta[f"chart_{name}"].value)
            assert chart == report.with_name(f"{report.stem}_{name}.png")
            assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert chart.as_uri() in meta["charts"].value
        assert {key for key in meta if key.startswith("chart_")} == {f"chart_{n}" for n in names}

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    drift_check, fairness_check = checks["drift_within_threshold"], checks["fairness_within_threshold"]
    assert not drift_check.passed
    share = drift_meta["drift_share"].value
    threshold = drift_meta["drift_share_threshold"].value  # settings.monitoring.drift_share_threshold
    assert f"drift share {share:.3f} > threshold {threshold:.3f}" in drift_check.description
    assert "label_clicked" in drift_check.description
    assert not fairness_check.passed
    assert fairness_check.description == fairness_meta["message"].value
    assert (
        "gap by user_group" in fairness_check.description and "of the catalog" in fairness_check.description
    )

    with recgen.connect() as con:
        stored = con.execute("select count(distinct run_date) from monitoring.drift_results").fetchone()
        fair_rows = con.execute("select count(*) from monitoring.fairness_metrics").fetchone()
    assert stored == (1,) and fair_rows is not None and fair_rows[0] > 20


def test_choose_model_prefers_the_named_one_else_the_best() -> None:
    world = make_world(n_users=80, n_items=40, n_days=4)
    good, relevant = make_recs(world, group_quality=dict.fromkeys(("18-34", "35-54", "55+"), 4.0), seed=1)
    bad, _ = make_recs(world, group_quality=dict.fromkeys(("18-34", "35-54", "55+"), -2.0), seed=1)
    recs = pd.concat([good.assign(model="a"), bad.assign(model="b")])
    assert choose_model(recs, relevant, "b", 10) == "b"
    assert choose_model(recs, relevant, "full_stack", 10) == "a"  # absent: the best NDCG@10
    assert choose_model(recs.drop(columns="model"), relevant, None, 10) is None


def _drift_result(day: str, share_of_ten: int) -> DriftResult:
    columns = [
        ColumnDrift(
            f"c{i}", "user_day", "wasserstein", 0.5 if i < share_of_ten else 0.01, 0.1, i < share_of_ten
        )
        for i in range(10)
    ]
    return DriftResult(
        run_date=pd.Timestamp(day).date(),
        columns=columns,
        drift_share=share_of_ten / 10,
        threshold=0.3,
        reference_rows={},
        current_rows={},
    )


def test_drift_sensor_requests_retraining_once_per_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECGEN_MONITORING__DRIFT_SHARE_THRESHOLD", "0.3")  # the sensor reads it from settings
    db = tmp_path / "recgen.duckdb"
    recgen = RecgenResource(home=str(tmp_path), duckdb_path=str(db))
    job = dg.define_asset_job("retrain", selection=dg.AssetSelection.all())
    sensor = build_drift_sensor(job)

    def tick(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(cursor=cursor, resources={"recgen": recgen})
        return sensor(context)

    first = tick(None)
    assert not first.run_requests and "no drift result" in str(first.skip_reason)

    drifted = _drift_result("2026-10-08", 5)  # share 0.5 > 0.3
    with duckdb.connect(str(db)) as con:
        save_drift_result(con, drifted)
    second = tick(None)
    assert [r.run_key for r in second.run_requests] == [f"drift-{drifted.run_id}"]
    assert second.run_requests[0].tags["recgen/drift_share"] == "0.5000"
    assert second.cursor == drifted.run_id

    again = tick(second.cursor)  # the same result on the next tick: no second run
    assert not again.run_requests and "already handled" in str(again.skip_reason)

    calm = _drift_result("2026-10-09", 3)  # share 0.3 is not above 0.3
    with duckdb.connect(str(db)) as con:
        save_drift_result(con, calm)
    quiet = tick(second.cursor)
    assert not quiet.run_requests and "0.300 vs threshold 0.300" in str(quiet.skip_reason)
    assert quiet.cursor == calm.run_id
