"""Schedules: each day at 03:00 UTC, the whole graph for the day that just ended."""

import dagster as dg

from orchestration.jobs import all_assets_job

# One run per new day partition: refresh ingest and features, retrain, evaluate, score and report the day,
# write its copy, rebuild the bento. The drift sensor retrains in between when the day's drift says so.
daily_refresh_schedule = dg.build_schedule_from_partitioned_job(
    all_assets_job,
    name="daily_refresh",
    hour_of_day=3,
    description="Every day at 03:00 UTC: recgen_all for the day that just ended.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
