"""Schedules: every day the new data, scores, drift report and copy for the day that ended; retraining on
its own, slower cron (settings.retrain_cron), with the drift sensor retraining in between when drift says so."""

import dagster as dg

from models.settings import get_settings
from orchestration.jobs import daily_refresh_job, retrain_job

# One run per new day partition: ingest and dbt, then that day's daily marts, the champion's scores, the drift
# report (whose stored result the drift sensor reads) and the copy.
daily_refresh_schedule = dg.build_schedule_from_partitioned_job(
    daily_refresh_job,
    name="daily_refresh",
    hour_of_day=3,
    description="Every day at 03:00 UTC: daily_refresh for the day that just ended.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

retrain_schedule = dg.ScheduleDefinition(
    name="retrain_schedule",
    job=retrain_job,
    cron_schedule=get_settings().retrain_cron,
    execution_timezone="UTC",
    description="Retrain, re-evaluate, re-report and rebuild the bento when due (settings.retrain_cron).",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
