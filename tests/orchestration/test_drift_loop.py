"""The drift loop end to end on the real simulator: knob on -> drifted columns flagged -> retrain requested;
knob off -> nothing flagged, no retrain. Real ingest, real dbt build, real Evidently report."""

import dagster as dg
import pytest

from orchestration.assets.dbt import recgen_daily_dbt_models, recgen_dbt_models
from orchestration.assets.ingest import raw_tables
from orchestration.assets.monitoring import drift_report
from orchestration.drift_sensor import build_drift_sensor
from orchestration.resources import RecgenResource, dbt_resource

pytestmark = pytest.mark.integration


def _drift_run(monkeypatch: pytest.MonkeyPatch, strength: float) -> tuple[dict, dg.SensorResult]:
    # Interests move towards one topic over the window; the last day is compared with the train window.
    monkeypatch.setenv("RECGEN_SIMULATOR__DRIFT_STRENGTH", str(strength))
    monkeypatch.setenv("RECGEN_SIMULATOR__N_USERS", "600")
    monkeypatch.setenv("RECGEN_SIMULATOR__N_DAYS", "14")
    resources = {"recgen": RecgenResource(), "dbt": dbt_resource()}
    assert dg.materialize([raw_tables, recgen_dbt_models], resources=resources).success
    with RecgenResource().connect() as con:
        (last_day,) = con.execute("select max(event_date) from marts.interactions").fetchone()
    # the day partition of the last day, as the daily schedule would run it (no models: no score column)
    result = dg.materialize(
        [recgen_daily_dbt_models, drift_report], resources=resources, partition_key=last_day.isoformat()
    )
    assert result.success
    # the daily dbt marts hold exactly that day, as one partition
    daily = {e.asset_key.to_user_string(): e.partition for e in result.get_asset_materialization_events()}
    assert daily["daily_impressions"] == daily["daily_item_metrics"] == last_day.isoformat()
    with RecgenResource().connect() as con:
        days = con.execute("select distinct event_date from marts.daily_impressions").fetchall()
        rows = con.execute("select count(*) from marts.daily_impressions").fetchone()
        expected = con.execute(
            "select count(*) from marts.interactions where event_date = ?", [last_day]
        ).fetchone()
    assert days == [(last_day,)] and rows == expected
    metadata = result.asset_materializations_for_node("drift_report")[0].metadata
    assert metadata["run_date"].value == last_day.isoformat()
    assert "model_score" in metadata["skipped_columns"].value
    figures = {key: metadata[key].value for key in ("drift_share", "drift_detected", "drifted_columns")}
    sensor = build_drift_sensor(dg.define_asset_job("retrain", selection=dg.AssetSelection.all()))
    tick = sensor(dg.build_sensor_context(resources={"recgen": RecgenResource()}))
    return figures, tick


def test_drift_on_flags_columns_and_requests_retraining(recgen_home, monkeypatch):
    figures, tick = _drift_run(monkeypatch, strength=0.9)
    assert figures["drift_detected"] is True, figures
    assert figures["drifted_columns"], figures
    assert len(tick.run_requests) == 1
    assert tick.run_requests[0].tags["recgen/trigger"] == "drift"


def test_drift_off_flags_nothing_and_requests_no_retraining(recgen_home, monkeypatch):
    figures, tick = _drift_run(monkeypatch, strength=0.0)
    assert figures["drift_detected"] is False, figures
    assert not tick.run_requests and "no retraining" in str(tick.skip_reason)
