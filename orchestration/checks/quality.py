"""Great Expectations suites as Dagster asset checks; the blocking ones stop everything downstream."""

import dagster as dg

from models.data.quality import SUITES, Suite, validate_table
from orchestration.resources import RecgenResource

SUITE_ASSETS = {
    "raw_users": dg.AssetKey(["raw", "users"]),
    "raw_items": dg.AssetKey(["raw", "items"]),
    "raw_events": dg.AssetKey(["raw", "events"]),
    "interactions": dg.AssetKey("interactions"),
    "user_histories": dg.AssetKey("user_histories"),
    "training_samples": dg.AssetKey("training_samples"),
}


def build_gx_check(suite: Suite, asset_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """One blocking asset check running ``suite`` through GX against the asset's DuckDB table."""

    @dg.asset_check(
        asset=asset_key,
        name=f"gx_{suite.name}",
        description=f"Great Expectations suite '{suite.name}': {suite.description}",
        blocking=suite.blocking,
        pool="duckdb",
    )
    def _check(recgen: RecgenResource) -> dg.AssetCheckResult:
        settings = recgen.settings()
        with recgen.connect() as con:
            result = validate_table(con, suite, settings.quality)
        return dg.AssetCheckResult(
            passed=result.success,
            severity=dg.AssetCheckSeverity.ERROR,
            description=result.summary(),
            metadata={
                "rows": result.rows,
                "rows_validated": result.rows_validated,
                "expectations": len(result.outcomes),
                "failed": dg.MetadataValue.json(
                    [
                        {"expectation": o.expectation, "column": o.column, "observed": str(o.observed)}
                        for o in result.failures
                    ]
                ),
            },
        )

    return _check


gx_checks = [build_gx_check(SUITES[name], key) for name, key in SUITE_ASSETS.items()]
