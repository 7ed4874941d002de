"""Asset checks on generated copy: every stored row passed the guardrails or records why it fell back."""

from __future__ import annotations

import dagster as dg

from models.generation.daily import CONTENT_TABLE, ensure_content_table, rows_without_reason
from orchestration.assets.generation import generated_content
from orchestration.resources import RecgenResource


@dg.asset_check(
    asset=generated_content,
    blocking=True,
    pool="duckdb",
    description="Every row of generation.generated_content passed the guardrails or has a fallback reason.",
)
def generated_content_guardrails(recgen: RecgenResource) -> dg.AssetCheckResult:
    with recgen.connect() as con:
        ensure_content_table(con)
        missing = rows_without_reason(con)
        total = con.execute(f"select count(*) from {CONTENT_TABLE}").fetchone()
        fallbacks = con.execute(
            f"select count(*) from {CONTENT_TABLE} where not passed_guardrails"
        ).fetchone()
    n_total = int(total[0]) if total else 0
    n_fallback = int(fallbacks[0]) if fallbacks else 0
    return dg.AssetCheckResult(
        passed=missing == 0,
        description=f"{missing} of {n_total} rows fell back without a recorded reason",
        metadata={
            "rows": n_total,
            "fallback_rows": n_fallback,
            "rows_without_reason": missing,
        },
    )


generation_checks = [generated_content_guardrails]
