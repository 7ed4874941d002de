"""Schedules: the daily refresh of the whole graph."""

from __future__ import annotations

import dagster as dg

from orchestration.jobs import all_assets_job

daily_refresh_schedule = dg.ScheduleDefinition(
    name="daily_refresh",
    job=all_assets_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Every day at 03:00 UTC: ingest, rebuild features, retrain, generate and report.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
