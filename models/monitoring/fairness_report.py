"""The fairness report: figures, mitigation side by side, a plain HTML page, an Evidently page and a DuckDB table.

The page ``reports/fairness/<date>.html`` is our own (no scripts, numbers in tables, PNG charts beside it:
``<date>_exposure.png``, ``<date>_ndcg_by_group.png``, ``<date>_rerank_tradeoff.png``); Evidently's ``ItemBias``
(top-k exposure against the catalog, per creator group and per category) goes to
``reports/fairness/<date>_evidently.html``, linked from the page.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.datasets import Recsys
from evidently.metrics import ItemBias

from models.data.warehouse import table_exists
from models.monitoring.charts import Chart, chart_path, exposure_chart, ndcg_by_group_chart, tradeoff_chart
from models.monitoring.common import (
    MONITORING_SCHEMA,
    ensure_schema,
    html_page,
    html_table,
    paragraph,
    write_text,
)
from models.monitoring.fairness import CREATOR_ATTRIBUTE, FairnessResult, evaluate_fairness
from models.monitoring.html_safe import html_safe
from models.monitoring.mitigation import compare_mitigation
from models.monitoring.quality import recsys_frame
from models.settings import MonitoringSettings

FAIRNESS_TABLE = f"{MONITORING_SCHEMA}.fairness_metrics"
log = logging.getLogger(__name__)

SECTION_TITLES = (
    "Check",
    "Quality by user group",
    "Exposure by creator group",
    "Popularity bias",
    "Mitigation: exposure-aware re-ranking",
)


@dataclass
class FairnessReport:
    """The result plus where its pages went."""

    result: FairnessResult
    html_path: Path | None
    evidently_html_path: Path | None
    charts: list[Chart] = field(default_factory=list)


def run_fairness_report(
    recs: pd.DataFrame,
    relevant: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    settings: MonitoringSettings,
    interactions: pd.DataFrame | None = None,
    run_date: dt.date | None = None,
    html_path: Path | None = None,
) -> FairnessReport:
    """Evaluate fairness, compare the re-ranking strengths, log the comparison and write both HTML pages."""
    k = settings.k
    result = evaluate_fairness(
        recs,
        relevant,
        users,
        items,
        k=k,
        ndcg_gap_threshold=settings.ndcg_gap_threshold,
        exposure_gap_threshold=settings.exposure_gap_threshold,
        min_group_users=settings.min_group_users,
        interactions=interactions,
    )
    strengths = sorted({*settings.rerank_sweep, settings.rerank_strength})
    result.mitigation = compare_mitigation(recs, relevant, items, k, strengths)
    for comparison in result.mitigation:
        # printed on purpose: the NDCG-for-exposure trade is what a reader of the run log wants to see
        print(f"fairness re-ranking {comparison.describe()}")
        log.info("fairness re-ranking %s", comparison.describe())
    evidently_path = None
    charts: list[Chart] = []
    if html_path is not None:
        evidently_path = html_path.with_name(html_path.stem + "_evidently.html")
        try:
            evidently_item_bias(recs, relevant, items, k, evidently_path)
        except Exception as error:  # noqa: BLE001 - the page of our own figures must not depend on Evidently
            log.warning("Evidently ItemBias page failed: %s", error)
            evidently_path = None
        charts = fairness_charts(result, html_path)
        write_text(html_path, fairness_html(result, run_date, evidently_path, charts))
    return FairnessReport(result, html_path, evidently_path, charts)


def fairness_charts(result: FairnessResult, html_path: Path) -> list[Chart]:
    """The report's PNGs beside ``html_path``: exposure vs catalog, NDCG@k per user group, re-ranking trade-off."""
    k = result.k
    charts = [
        Chart(
            "exposure",
            exposure_chart(result.exposure, k, chart_path(html_path, "exposure")),
            f"Share of top-{k} exposure against share of the catalog (and of relevant items) per creator group.",
        )
    ]
    if result.quality:
        charts.append(
            Chart(
                "ndcg_by_group",
                ndcg_by_group_chart(result.quality, k, chart_path(html_path, "ndcg_by_group")),
                f"NDCG@{k} per user group; error bars are 95 % confidence intervals of the group mean.",
            )
        )
    if result.mitigation:
        charts.append(
            Chart(
                "rerank_tradeoff",
                tradeoff_chart(mitigation_frame(result), k, chart_path(html_path, "rerank_tradeoff")),
                f"Re-ranking trade-off: NDCG@{k} lost against the share of the exposure gap closed, per strength.",
            )
        )
    return charts


def evidently_item_bias(
    recs: pd.DataFrame, relevant: pd.DataFrame, items: pd.DataFrame, k: int, path: Path
) -> Path:
    """Evidently ``ItemBias`` pages: top-k distribution of creator_group and category against the catalog."""
    attributes = [c for c in (CREATOR_ATTRIBUTE, "category") if c in items]
    catalog = items[["item_id", *attributes]].drop_duplicates("item_id").fillna("unknown")
    frame = (
        recsys_frame(recs, relevant)
        .merge(catalog, on="item_id", how="left")
        .fillna({a: "unknown" for a in attributes})
    )
    definition = DataDefinition(
        numerical_columns=["prediction", "target"],
        categorical_columns=["user_id", "item_id", *attributes],
        ranking=[Recsys(user_id="user_id", item_id="item_id", target="target", prediction="prediction")],
    )
    # ItemBias compares the top-k against the distinct items of "train" data: the catalog is that baseline.
    baseline = catalog.assign(user_id="catalog", target=1)
    labels = ["user_id", "item_id", *attributes]
    frame, baseline = html_safe(frame, labels), html_safe(baseline, labels)  # Evidently embeds them unescaped
    baseline_definition = DataDefinition(
        numerical_columns=["target"], categorical_columns=["user_id", "item_id", *attributes]
    )
    report = Report([ItemBias(k=k, column_name=a) for a in attributes])
    snapshot = report.run(
        current_data=Dataset.from_pandas(frame, data_definition=definition),
        reference_data=None,
        additional_data={
            "current_train_data": Dataset.from_pandas(baseline, data_definition=baseline_definition)
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path


def mitigation_frame(result: FairnessResult) -> pd.DataFrame:
    """The re-ranking comparison as a table (one row per strength)."""
    return pd.DataFrame([m.as_row() for m in result.mitigation])


def fairness_html(
    result: FairnessResult,
    run_date: dt.date | None,
    evidently_path: Path | None,
    charts: list[Chart] | None = None,
) -> str:
    """The fairness page: the check, the group tables, exposure, popularity and mitigation, charts beside them."""
    k = result.k
    figure = {c.name: c.figure_html() for c in charts or []}
    verdict = "pass" if result.passed else "fail"
    check = [
        f'<p class="{verdict}">{verdict.upper()}</p>',
        paragraph(result.message(), "msg"),
        paragraph(
            f"Thresholds: NDCG@{k} gap between user groups <= {result.ndcg_gap_threshold}; "
            f"|exposure share - catalog share| of any creator group <= {result.exposure_gap_threshold}. "
            f"Groups with fewer than {result.min_group_users} evaluated users are shown but not gated."
        ),
    ]
    if evidently_path is not None:
        check.append(
            f'<p><a href="{html.escape(evidently_path.name, quote=True)}">Evidently item bias report</a> (top-k distribution of '
            "creator_group and category; its &quot;train&quot; bars are the catalog)</p>"
        )
    quality_parts = [figure["ndcg_by_group"]] if "ndcg_by_group" in figure else []
    for attribute, table in result.quality.items():
        gap = result.ndcg_gaps.get(attribute)
        ctr_gap = result.ctr_gaps.get(attribute)
        quality_parts.append(f"<h3>{html.escape(attribute)}</h3>")
        quality_parts.append(html_table(table))
        quality_parts.append(paragraph(gap.describe() if gap else "fewer than two gated groups"))
        if ctr_gap:
            quality_parts.append(paragraph(ctr_gap.describe() + " (logged CTR in the evaluation window)"))
    exposure_parts = [
        *([figure["exposure"]] if "exposure" in figure else []),
        html_table(result.exposure),
        paragraph(result.exposure_gap.describe()),
        paragraph(
            "exposure_share: share of all top-k slots; catalog_share: share of catalog items; relevant_share: "
            "share of the relevant (clicked in test) user-item pairs."
        ),
    ]
    popularity_parts = [
        html_table(
            pd.DataFrame(
                [
                    {
                        "exposure_gini": result.gini,
                        "items_exposed": result.items_exposed,
                        "catalog_size": result.catalog_size,
                        "coverage": result.items_exposed / max(result.catalog_size, 1),
                    }
                ]
            )
        ),
        paragraph(
            f"Gini of top-{k} slots across every catalog item (0 = every item shown equally often, "
            "close to 1 = a few items take all the exposure)."
        ),
    ]
    mitigation_parts = (
        [
            *([figure["rerank_tradeoff"]] if "rerank_tradeoff" in figure else []),
            html_table(mitigation_frame(result)),
            *(paragraph(m.describe()) for m in result.mitigation),
            paragraph(
                "Greedy re-ranking of each user's candidate list: a slot goes to the item maximizing scaled score "
                "+ strength x (catalog share - exposure share so far) of its creator group."
            ),
        ]
        if result.mitigation
        else [paragraph("not run")]
    )
    title = f"recgen fairness report{f' {run_date}' if run_date else ''} (top-{k})"
    return html_page(
        title,
        list(
            zip(
                SECTION_TITLES,
                [check, quality_parts, exposure_parts, popularity_parts, mitigation_parts],
                strict=True,
            )
        ),
    )


def fairness_rows(result: FairnessResult, run_date: dt.date) -> pd.DataFrame:
    """The result in long form: (run_date, section, attribute, group_name, metric, value)."""
    rows: list[tuple[str, str, str | None, str, float]] = []
    for attribute, table in result.quality.items():
        for _, row in table.iterrows():
            for metric in (c for c in table.columns if c != "group"):
                if pd.notna(row[metric]):
                    rows.append(("quality", attribute, str(row["group"]), metric, float(row[metric])))
        for name, gap in (
            ("ndcg_gap", result.ndcg_gaps.get(attribute)),
            ("ctr_gap", result.ctr_gaps.get(attribute)),
        ):
            if gap is not None:
                rows.append(("gap", attribute, f"{gap.high_group} vs {gap.low_group}", name, gap.gap))
    for _, row in result.exposure.iterrows():
        for metric in (c for c in result.exposure.columns if c != "group"):
            rows.append(("exposure", CREATOR_ATTRIBUTE, str(row["group"]), metric, float(row[metric])))
    rows.append(
        ("gap", CREATOR_ATTRIBUTE, result.exposure_gap.group, "exposure_gap", result.exposure_gap.gap)
    )
    rows.append(("popularity", "item", None, "exposure_gini", result.gini))
    rows.append(("popularity", "item", None, "items_exposed", float(result.items_exposed)))
    for m in result.mitigation:
        for metric, value in m.as_row().items():
            if metric != "strength":
                rows.append(
                    ("mitigation", CREATOR_ATTRIBUTE, f"strength={m.strength:g}", metric, float(value))
                )
    rows.append(("check", "all", None, "passed", float(result.passed)))
    frame = pd.DataFrame(rows, columns=["section", "attribute", "group_name", "metric", "value"])
    frame.insert(0, "run_date", run_date)
    return frame


def save_fairness_metrics(con: duckdb.DuckDBPyConnection, result: FairnessResult, run_date: dt.date) -> int:
    """Replace ``monitoring.fairness_metrics`` rows of ``run_date`` with this result; returns rows written."""
    ensure_schema(con)
    con.execute(
        f"""
        create table if not exists {FAIRNESS_TABLE} (
            run_date date not null,
            section varchar not null,
            attribute varchar not null,
            group_name varchar,
            metric varchar not null,
            value double not null,
            message varchar,
            created_at timestamp not null
        )
        """
    )
    rows = fairness_rows(result, run_date)
    rows["message"] = result.message()
    rows["created_at"] = pd.Timestamp.now().floor("us")
    con.execute(f"delete from {FAIRNESS_TABLE} where run_date = ?", [run_date])
    con.register("fairness_rows", rows)
    try:
        con.execute(
            f"insert into {FAIRNESS_TABLE} select run_date, section, attribute, group_name, metric, value, "
            "message, created_at from fairness_rows"
        )
    finally:
        con.unregister("fairness_rows")
    return len(rows)


@dataclass(frozen=True)
class StoredFairness:
    """The latest stored fairness verdict, as the asset check reads it."""

    run_date: dt.date
    passed: bool
    message: str
    ndcg_gap: float | None
    exposure_gap: float | None


def latest_fairness(con: duckdb.DuckDBPyConnection) -> StoredFairness | None:
    """The stored verdict of the latest run date (None when nothing is stored)."""
    if not table_exists(con, FAIRNESS_TABLE):
        return None
    row = con.execute(
        f"""
        select run_date,
               max(value) filter (where section = 'check' and metric = 'passed'),
               any_value(message),
               max(value) filter (where section = 'gap' and metric = 'ndcg_gap'),
               max(value) filter (where section = 'gap' and metric = 'exposure_gap')
        from {FAIRNESS_TABLE}
        where run_date = (select max(run_date) from {FAIRNESS_TABLE})
        group by run_date
        """
    ).fetchone()
    if row is None:
        return None
    return StoredFairness(
        run_date=pd.Timestamp(row[0]).date(),
        passed=bool(row[1]),
        message=str(row[2]),
        ndcg_gap=None if row[3] is None else float(row[3]),
        exposure_gap=None if row[4] is None else float(row[4]),
    )


def summary_figures(result: FairnessResult) -> dict[str, float | str]:
    """Flat figures for Dagster metadata."""
    worst = result.worst_ndcg_gap
    figures: dict[str, float | str] = {
        "passed": str(result.passed),
        f"worst_ndcg@{result.k}_gap": worst.gap if worst else 0.0,
        "exposure_gap": result.exposure_gap.gap,
        "exposure_gap_group": result.exposure_gap.group,
        "exposure_gini": result.gini,
    }
    for m in result.mitigation:
        figures[f"rerank_{m.strength:g}_ndcg_lost"] = m.ndcg_lost
        figures[f"rerank_{m.strength:g}_gap_after"] = m.gap_after
    figures["message"] = result.message()
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in figures.items()}
