"""The drift sensor: a stored drift result above the threshold starts the retraining job, once per result.

The cursor is the ``run_id`` of the last drift result the sensor looked at. ``run_id`` is a hash of the day and
the per-column scores, so re-materializing the same report does not retrain again, while the next day's report
(or changed data for the same day) is a new result. The run key is the same id, so even a lost cursor cannot
start two runs for one result.
"""

from __future__ import annotations

import dagster as dg

from models.data import warehouse
from models.monitoring.drift import latest_drift_run
from orchestration.resources import RecgenResource

# The sensor must not wait behind a long dbt build or training run that holds the warehouse lock.
LOCK_TIMEOUT_S = 10.0


def build_drift_sensor(
    job: dg.JobDefinition | dg.UnresolvedAssetJobDefinition,
    name: str = "drift_retrain_sensor",
    minimum_interval_seconds: int = 300,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """A sensor that requests a run of ``job`` when the latest drift share passes the threshold."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Retrains when the latest monitoring.drift_results share of drifted columns passes "
        "settings.monitoring.drift_share_threshold (once per drift result).",
    )
    def _drift_sensor(context: dg.SensorEvaluationContext, recgen: RecgenResource) -> dg.SensorResult:
        settings = recgen.settings()
        try:
            with warehouse.connect(settings.database, timeout_s=LOCK_TIMEOUT_S) as con:
                run = latest_drift_run(con)
        except warehouse.WarehouseLockTimeout:
            return dg.SensorResult(skip_reason="warehouse busy (lock held); will look again next tick")
        if run is None:
            return dg.SensorResult(skip_reason="no drift result stored yet")
        if run.run_id == context.cursor:
            return dg.SensorResult(skip_reason=f"drift result {run.run_id} ({run.run_date}) already handled")
        threshold = settings.monitoring.drift_share_threshold
        figures = f"drift share {run.drift_share:.3f} vs threshold {threshold:.3f} on {run.run_date}"
        if not run.passes(threshold):
            return dg.SensorResult(skip_reason=f"no retraining: {figures}", cursor=run.run_id)
        context.log.info(f"retraining: {figures}; drifted columns {run.drifted_columns}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"drift-{run.run_id}",
                    tags={
                        "recgen/trigger": "drift",
                        "recgen/drift_run_date": run.run_date.isoformat(),
                        "recgen/drift_share": f"{run.drift_share:.4f}",
                    },
                )
            ],
            cursor=run.run_id,
        )

    return _drift_sensor
