"""Sensors: start a data refresh when new raw files land in the inbox."""

import hashlib

import dagster as dg

from models.data.ingest import pending_inbox_files
from orchestration.jobs import data_refresh_job
from orchestration.resources import RecgenResource


@dg.sensor(
    job=data_refresh_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New files in the inbox (feedback from the service, drops of raw data) start a data refresh.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, recgen: RecgenResource) -> dg.SensorResult:
    files = pending_inbox_files(recgen.settings().inbox_dir)
    if not files:
        return dg.SensorResult(skip_reason="no new files in the inbox")
    # The run key names exactly this set of files (and their sizes): a file still being appended to, or the
    # same files seen again before the run moved them, never start a second run for the same content.
    fingerprint = hashlib.sha256("\n".join(f"{p}:{p.stat().st_size}" for p in files).encode()).hexdigest()[
        :16
    ]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=fingerprint, tags={"recgen/inbox_files": str(len(files))})]
    )
