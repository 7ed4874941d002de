"""Asset checks on the reports: drift share and fairness gaps within the thresholds of settings.monitoring.

They read what the report assets stored in DuckDB (``monitoring.drift_results``, ``monitoring.fairness_metrics``),
so a check always judges the figures of the report it sits beside. Neither blocks: drift starts retraining
through the drift sensor, and a fairness failure is for people to read, not a reason to stop the pipeline.
"""

import datetime as dt

import dagster as dg

from models.monitoring.drift import latest_drift_run
from models.monitoring.fairness_report import latest_fairness
from orchestration.assets.monitoring import drift_report, fairness_report
from orchestration.resources import RecgenResource


@dg.asset_check(
    asset=drift_report,
    description="Share of drifted columns <= settings.monitoring.drift_share_threshold.",
    pool="duckdb",
)
def drift_within_threshold(
    context: dg.AssetCheckExecutionContext, recgen: RecgenResource
) -> dg.AssetCheckResult:
    threshold = recgen.settings().monitoring.drift_share_threshold
    day = dt.date.fromisoformat(context.partition_key) if context.has_partition_key else None
    with recgen.connect() as con:
        run = latest_drift_run(con, day)
    if run is None:
        return dg.AssetCheckResult(
            passed=False, description=f"no drift result for {day or 'any day'} in monitoring.drift_results"
        )
    passed = not run.passes(threshold)
    verdict = "<=" if passed else ">"
    description = (
        f"drift share {run.drift_share:.3f} {verdict} threshold {threshold:.3f} on {run.run_date} "
        f"({len(run.drifted_columns)}/{run.n_columns} columns drifted"
        + (f": {', '.join(run.drifted_columns)})" if run.drifted_columns else ")")
    )
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "drift_share": dg.MetadataValue.float(run.drift_share),
            "threshold": dg.MetadataValue.float(threshold),
            "drifted_columns": dg.MetadataValue.json(run.drifted_columns),
            "run_date": dg.MetadataValue.text(run.run_date.isoformat()),
        },
    )


@dg.asset_check(
    asset=fairness_report,
    description="Largest NDCG@k gap between user groups and creator-group exposure gap within the thresholds.",
    pool="duckdb",
)
def fairness_within_threshold(recgen: RecgenResource) -> dg.AssetCheckResult:
    with recgen.connect() as con:
        stored = latest_fairness(con)
    if stored is None:
        return dg.AssetCheckResult(
            passed=False, description="no fairness result in monitoring.fairness_metrics"
        )
    metadata: dict[str, dg.MetadataValue] = {"run_date": dg.MetadataValue.text(stored.run_date.isoformat())}
    if stored.ndcg_gap is not None:
        metadata["worst_ndcg_gap"] = dg.MetadataValue.float(stored.ndcg_gap)
    if stored.exposure_gap is not None:
        metadata["exposure_gap"] = dg.MetadataValue.float(stored.exposure_gap)
    return dg.AssetCheckResult(
        passed=stored.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=stored.message,
        metadata=metadata,
    )


monitoring_checks = [drift_within_threshold, fairness_within_threshold]
