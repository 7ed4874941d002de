"""Schedules: the daily refresh of the whole graph, then the day's generated content."""

import dagster as dg

from orchestration.jobs import all_assets_job, daily_content_job

daily_refresh_schedule = dg.ScheduleDefinition(
    name="daily_refresh",
    job=all_assets_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Every day at 03:00 UTC: ingest, rebuild features, retrain, evaluate, report, rebuild the bento.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

# One run per new day partition (the day that just ended), an hour after the refresh.
daily_content_schedule = dg.build_schedule_from_partitioned_job(
    daily_content_job,
    hour_of_day=4,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
