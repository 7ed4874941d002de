"""The data layer as Dagster runs it: ingest -> GX checks -> dbt build, on a real DuckDB file."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from models.settings import get_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _data_layer():
    from orchestration.definitions import defs

    return defs


def _materialize_data_layer(**resource_overrides):
    from orchestration.assets.dbt import recgen_dbt_models
    from orchestration.assets.ingest import raw_tables
    from orchestration.checks.quality import gx_checks
    from orchestration.resources import RecgenResource, dbt_resource

    return dg.materialize(
        [raw_tables, recgen_dbt_models, *gx_checks],
        resources={"recgen": RecgenResource(), "dbt": dbt_resource(), **resource_overrides},
        raise_on_error=False,
    )


def test_definitions_load_with_every_stage():
    defs = _data_layer()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw/users", "raw/items", "raw/events", "training_samples", "user_features"} <= keys
    check_names = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert "gx_raw_events" in check_names and "gx_training_samples" in check_names
    assert defs.get_schedule_def("daily_refresh") and defs.get_sensor_def("inbox_sensor")


def test_schedules_refresh_each_day_and_retrain_when_due():
    from orchestration.definitions import defs

    schedule = defs.get_schedule_def("daily_refresh")
    tick = schedule.evaluate_tick(
        dg.build_schedule_context(
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=dt.datetime(2026, 10, 22, 3, 0, tzinfo=dt.UTC),
        )
    )
    (request,) = tick.run_requests
    assert schedule.job_name == "daily_refresh" and request.partition_key == "2026-10-21"
    # the day's run: new data and its partition of the daily marts, scores, drift and copy; no training
    graph = defs.resolve_asset_graph()
    daily = set(defs.resolve_job_def("daily").asset_layer.selected_asset_keys)
    assert {k.to_user_string() for k in daily} == {
        "daily_impressions", "daily_item_metrics", "daily_scores", "drift_report", "generated_content",
    }  # fmt: skip
    assert all(graph.get(key).is_partitioned for key in daily)
    refresh = set(defs.resolve_job_def("daily_refresh").asset_layer.selected_asset_keys)
    assert daily <= refresh and dg.AssetKey(["raw", "events"]) in refresh
    assert dg.AssetKey("interactions") in refresh and dg.AssetKey("ranker") not in refresh
    # retraining runs on its own cron (settings.retrain_cron) and rebuilds no day partition
    retrain = defs.get_schedule_def("retrain_schedule")
    assert retrain.job_name == "retrain" and retrain.cron_schedule == get_settings().retrain_cron
    retrained = set(defs.resolve_job_def("retrain").asset_layer.selected_asset_keys)
    assert dg.AssetKey("ranker") in retrained and not retrained & daily
    # recgen_all (make run) is one day of everything; only the daily assets are partitioned
    everything = set(defs.resolve_job_def("recgen_all").asset_layer.selected_asset_keys)
    assert refresh | retrained <= everything
    assert not any(graph.get(key).is_partitioned for key in everything - daily)


def test_data_layer_materializes_marts_and_passes_checks(recgen_home):
    result = _materialize_data_layer()
    assert result.success
    checks = result.get_asset_check_evaluations()
    failed = [c.check_name for c in checks if not c.passed]
    assert not failed, failed
    con = duckdb.connect(str(recgen_home / "recgen.duckdb"), read_only=True)
    try:
        splits = dict(con.execute("select split, count(*) from marts.training_samples group by 1").fetchall())
        assert set(splits) == {"train", "valid", "test"}
        raw_events = con.execute("select count(*) from raw.events").fetchone()[0]
        assert raw_events > 100
    finally:
        con.close()


def test_blocking_check_stops_downstream(recgen_home, monkeypatch):
    # Demand more events than the tiny dataset has: the blocking raw_events suite fails, so dbt must not run.
    monkeypatch.setenv("RECGEN_QUALITY__MIN_EVENTS", str(10**9))
    result = _materialize_data_layer()
    evaluations = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert evaluations["gx_raw_events"] is False
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "raw/events" in materialized
    assert "training_samples" not in materialized and "stg_recgen__events" not in materialized


OVERLAPPING_RUN = textwrap.dedent(
    """
    import dagster as dg
    from orchestration.assets.dbt import recgen_dbt_models
    from orchestration.assets.ingest import raw_tables
    from orchestration.resources import RecgenResource, dbt_resource
    result = dg.materialize([raw_tables, recgen_dbt_models],
                            resources={"recgen": RecgenResource(), "dbt": dbt_resource()})
    print("RUN_OK", result.success)
    """
)


def test_two_overlapping_runs_both_succeed(recgen_home):
    """Two processes materialize the same DuckDB file at once; the warehouse lock serializes them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Output goes to files, not pipes: a child blocked on a full pipe while holding the warehouse lock would
    # deadlock the other child (and this test) waiting for that lock.
    logs = [recgen_home.parent / f"run{i}.log" for i in range(2)]
    procs = []
    for log in logs:
        with log.open("w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", OVERLAPPING_RUN],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    for proc in procs:
        proc.wait(timeout=600)
    outputs = [log.read_text() for log in logs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
        assert "RUN_OK True" in out
    assert "Could not set lock" not in "".join(outputs)
