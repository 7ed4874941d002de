"""Asset checks on generated copy: reasons recorded for every fallback, and quality figures that can fail.

``generated_content_quality`` recomputes the figures from what was stored for the latest written day (each
generation once, with its stored verdict, whether it was written in that run or served from the cache;
copies of it served to other readers are counted as cache hits) against the items' own facts in ``marts.item_features``: it fails when the fallback rate is above
``generation.max_fallback_rate``, when the faithfulness of model rows is below ``generation.min_faithfulness``
or when their distinct-2 is below ``generation.min_distinct_2``.
"""

from __future__ import annotations

import dagster as dg

from models.generation.daily import (
    CONTENT_TABLE,
    ensure_content_table,
    latest_day_rows,
    read_items,
    rows_without_reason,
)
from models.generation.evaluation import check_failures, quality_figures, sample_rows
from models.generation.service import items_by_id
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


@dg.asset_check(
    asset=generated_content,
    # Not blocking: nothing is downstream of the copy, so blocking would only turn the whole run red; a day
    # whose copy misses its figures shows as a failed check in the UI and in make run's summary instead.
    blocking=False,
    pool="duckdb",
    description="The latest day's copy: fallback rate <= generation.max_fallback_rate, faithfulness of model "
    "rows >= generation.min_faithfulness, distinct-2 of model rows >= generation.min_distinct_2.",
)
def generated_content_quality(recgen: RecgenResource) -> dg.AssetCheckResult:
    settings = recgen.settings().generation
    with recgen.connect() as con:
        ensure_content_table(con)
        day, rows = latest_day_rows(con)
        items = items_by_id(read_items(con))
    # each stored verdict counts once, whether generated in that run or taken from the cache
    figures = quality_figures(rows, items, {})
    failures = check_failures(figures, settings) if rows else ["no generated rows"]
    samples = sample_rows(rows, per_style=5)
    table = "| style | task | item | fallback | text |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r.style} | {r.task} | {r.item_id} | {not r.passed_guardrails} | {r.text.replace('|', '/')} |"
        for r in samples
    )
    metadata: dict[str, object] = {
        "day": str(day),
        "thresholds": dg.MetadataValue.json(
            {
                "max_fallback_rate": settings.max_fallback_rate,
                "min_faithfulness": settings.min_faithfulness,
                "min_distinct_2": settings.min_distinct_2,
            }
        ),
        "fallback_reasons": dg.MetadataValue.json(figures["fallback_reasons"]),
        "samples_per_style": dg.MetadataValue.md(table),
    }
    for key in ("n_rows", "n_model_rows", "n_fallback_rows", "n_cached_rows"):
        metadata[key] = int(figures[key])
    for key in (
        "fallback_rate",
        "faithfulness",
        "distinct_2",
        "distinct_2_copy_ceiling",
        "distinct_2_same_item",
        "well_formed_share",
        "style_accuracy",
    ):
        value = figures[key]
        metadata[key] = dg.MetadataValue.float(float(value)) if value == value else "n/a"
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures)
        or f"{figures['n_model_rows']} of {figures['n_rows']} rows model-written",
        metadata=metadata,
    )


generation_checks = [generated_content_guardrails, generated_content_quality]
