"""Dagster's multiprocess executor (RECGEN_DAGSTER_EXECUTOR=multiprocess) runs the ingest and its three GX checks
with the DuckDB pool: each step in its own process, the warehouse steps one at a time (the three checks could
run side by side without the pool), on a real instance and DuckDB file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_ingest_and_checks_run_under_the_multiprocess_executor_with_the_duckdb_pool(recgen_home, tmp_path):
    import dagster as dg

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "orchestration" / "dagster.yaml", dagster_home / "dagster.yaml")  # as `make` does
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "RECGEN_DAGSTER_EXECUTOR": "multiprocess",
        "PYTHONPATH": str(ROOT),
    }
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "orchestration.definitions",
         "--select", "raw/users,raw/items,raw/events"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        records = instance.get_records_for_run(run.run_id).records
        events = [r.event_log_entry for r in records if r.event_log_entry.dagster_event is not None]
        starts = [e for e in events if e.dagster_event.event_type == dg.DagsterEventType.STEP_START]
        engine = [
            e.user_message for e in events if e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
        ]
    assert any("multiprocess executor" in message for message in engine), engine[:5]
    # the three checks were ready together after the ingest; the pool held back all but one at a time
    assert any("blocked by limit for pool duckdb" in message for message in engine), engine
    steps = {e.step_key: e.dagster_event.pid for e in starts}
    checks = {"raw__users_gx_raw_users", "raw__items_gx_raw_items", "raw__events_gx_raw_events"}
    assert {"raw_tables", *checks} <= set(steps), sorted(steps)
    # every step ran in a process of its own (none in the process that ran the run)
    assert len(set(steps.values())) == len(steps) and run_pid(events) not in steps.values()
    # the DuckDB pool (limit 1) let one warehouse step run at a time: no step started while another ran
    spans = step_spans(events)
    pooled = sorted(spans[k] for k in spans if k in steps)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(pooled, pooled[1:], strict=False))
    assert Path(os.environ["RECGEN_DUCKDB_PATH"]).exists()


def run_pid(events) -> int | None:
    """The pid of the process that ran the run (its RUN_START event)."""
    import dagster as dg

    return next(
        (e.dagster_event.pid for e in events if e.dagster_event.event_type == dg.DagsterEventType.RUN_START),
        None,
    )


def step_spans(events) -> dict[str, tuple[float, float]]:
    """(start, end) timestamps of each step."""
    import dagster as dg

    done = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    starts = {
        e.step_key: e.timestamp
        for e in events
        if e.dagster_event.event_type == dg.DagsterEventType.STEP_START
    }
    ends = {e.step_key: e.timestamp for e in events if e.dagster_event.event_type in done}
    return {k: (starts[k], ends[k]) for k in starts if k in ends}
