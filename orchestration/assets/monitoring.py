"""Reports: data drift, recommendation quality and fairness, each an HTML page plus a DuckDB table.

Thin adapters over ``models.monitoring``: read the marts and the evaluation's recommendations under the warehouse
lock, compute outside it, write the figures back under it.
"""

import datetime as dt
import logging
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from models.data.warehouse import table_exists
from models.monitoring.charts import Chart
from models.monitoring.common import mean_ndcg, relevant_pairs
from models.monitoring.drift import run_drift_report, save_drift_result
from models.monitoring.fairness_report import run_fairness_report, save_fairness_metrics, summary_figures
from models.monitoring.quality import run_quality_report
from models.monitoring.scores import (
    IMPRESSION_COLUMNS,
    has_reference,
    read_score_windows,
    reference_sample,
    save_day_scores,
    save_reference,
    score_impressions,
)
from models.registry import ModelRegistry
from models.settings import Settings
from orchestration.partitions import daily_partitions
from orchestration.resources import RecgenResource

MART_DEPS = [dg.AssetKey("interactions"), dg.AssetKey("user_features"), dg.AssetKey("item_features")]
EVALUATION_DEP = dg.AssetKey("full_stack_champion")  # its recommendations, after the gate
RECOMMENDATIONS_TABLE = "ml.eval_recommendations"
log = logging.getLogger(__name__)


def _read(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    return con.execute(sql).df()


def _read_marts(con: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
    return {
        "interactions": _read(
            con,
            "select request_id, user_id, item_id, event_ts, event_date, position, clicked, dwell_seconds, rating, "
            "split from marts.interactions",
        ),
        "user_features": _read(con, "select * from marts.user_features"),
        "item_features": _read(con, "select * from marts.item_features"),
    }


def choose_model(recs: pd.DataFrame, relevant: pd.DataFrame, wanted: str | None, k: int) -> str | None:
    """The model to monitor: ``wanted`` when present, else the one with the best NDCG@k."""
    if "model" not in recs:
        return None
    models = sorted(recs["model"].dropna().unique())
    if wanted in models:
        return wanted
    scores = {m: mean_ndcg(recs[recs["model"] == m], relevant, k) for m in models}
    best = max(scores, key=lambda m: scores[m])
    log.warning(
        "model %r not in %s; monitoring %r (best ndcg@%d %.4f)",
        wanted,
        RECOMMENDATIONS_TABLE,
        best,
        k,
        scores[best],
    )
    return best


def _evaluation_inputs(
    recgen: RecgenResource, settings: Settings
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame, str | None]:
    """Marts, the monitored model's recommendations and their ground truth (test engagements)."""
    with recgen.connect() as con:
        marts = _read_marts(con)
        if not table_exists(con, RECOMMENDATIONS_TABLE):
            raise dg.Failure(f"{RECOMMENDATIONS_TABLE} is missing: materialize the evaluation asset first")
        recs = _read(con, f"select * from {RECOMMENDATIONS_TABLE}")
    if "split" in recs:
        recs = recs[recs["split"] == "test"]
    relevant = relevant_pairs(marts["interactions"], "test")
    model = choose_model(recs, relevant, settings.monitoring.model, settings.monitoring.k)
    if model is not None:
        recs = recs[recs["model"] == model]
    # Only the users the evaluation ranked for count (it may sample them: settings.evaluation.max_users).
    relevant = relevant[relevant["user_id"].isin(set(recs["user_id"]))]
    return marts, recs.reset_index(drop=True), relevant.reset_index(drop=True), model


def _report_path(settings: Settings, kind: str, day: dt.date) -> Path:
    return (settings.reports_dir / kind / f"{day.isoformat()}.html").resolve()


def chart_metadata(charts: list[Chart]) -> dict[str, dg.MetadataValue]:
    """One ``chart_<name>`` path per PNG beside the report, and a markdown list linking them all."""
    metadata: dict[str, dg.MetadataValue] = {
        f"chart_{c.name}": dg.MetadataValue.path(str(c.path.resolve())) for c in charts
    }
    if charts:
        metadata["charts"] = dg.MetadataValue.md(
            "\n".join(f"- [{c.path.name}]({c.path.resolve().as_uri()}): {c.caption}" for c in charts)
        )
    return metadata


def _latest_day(interactions: pd.DataFrame) -> dt.date:
    return pd.to_datetime(interactions["event_date"]).max().date()


@dg.asset(
    group_name="reports",
    deps=[dg.AssetKey("interactions"), EVALUATION_DEP],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    kinds={"pytorch", "duckdb"},
    pool="duckdb",
    description="The champion full_stack model's score of every impression of the day "
    "(monitoring.daily_scores), and once per model version its scores on a sample of the validation window "
    "(monitoring.score_reference): the model_score column of the drift report.",
)
def daily_scores(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings = recgen.settings()
    day = dt.date.fromisoformat(context.partition_key)
    champion = ModelRegistry.from_settings(settings).champion("full_stack")
    if champion is None:
        raise dg.Failure(
            "no champion full_stack model in the registry: materialize the evaluation asset first"
        )
    columns = ", ".join(IMPRESSION_COLUMNS)
    with recgen.connect() as con:
        impressions = con.execute(
            f"select {columns} from marts.interactions where cast(event_date as date) = ?", [day]
        ).df()
        reference = None
        if not has_reference(con, champion.version):
            interactions = _read(
                con, f"select {columns}, split from marts.interactions where split = 'valid' order by all"
            )
            reference = reference_sample(
                interactions, settings.monitoring.drift_reference_max_rows, settings.seed
            )
    if impressions.empty:
        raise dg.Failure(f"no impressions on {day} in marts.interactions: nothing to score")
    from models.recommender import load_full_stack  # torch: imported when the asset runs, not at load

    model = load_full_stack(champion.path, settings.resolved_device)
    scored = score_impressions(model, impressions)
    reference_scored = score_impressions(model, reference) if reference is not None else None
    with recgen.connect() as con:
        rows = save_day_scores(con, day, champion.version, scored)
        if reference_scored is not None:
            save_reference(con, champion.version, reference_scored)
    by_click = scored.groupby("clicked")["score"].mean()
    metadata: dict[str, dg.MetadataValue] = {
        "rows": dg.MetadataValue.int(rows),
        "model_version": dg.MetadataValue.text(champion.version),
        "mean_score": dg.MetadataValue.float(float(scored["score"].mean())),
        "unscored_rows": dg.MetadataValue.int(int(scored["score"].isna().sum())),
        "ctr": dg.MetadataValue.float(float(scored["clicked"].mean())),
        "reference_rows_written": dg.MetadataValue.int(
            0 if reference_scored is None else len(reference_scored)
        ),
    }
    if {0, 1} <= set(by_click.index):
        metadata["mean_score_clicked_minus_not"] = dg.MetadataValue.float(float(by_click[1] - by_click[0]))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="reports",
    deps=[dg.AssetKey("daily_scores"), *MART_DEPS],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    kinds={"evidently", "duckdb"},
    pool="duckdb",
    description="Evidently data drift of the train window against the partition's day (user-day, impression, "
    "item-day columns, and the champion's scores against its validation-window scores); HTML in "
    "reports/drift/<date>.html, per-column results in monitoring.drift_results.",
)
def drift_report(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings = recgen.settings()
    day = dt.date.fromisoformat(context.partition_key)
    with recgen.connect() as con:
        marts = _read_marts(con)
        reference_scores, current_scores, score_version = read_score_windows(con, day)
    days = pd.to_datetime(marts["interactions"]["event_date"]).dt.date
    if not days.eq(day).any():
        raise dg.Failure(
            f"no interactions on {day} in marts.interactions (its days run {days.min()} .. {days.max()}): "
            "nothing to compare with the train window"
        )
    path = _report_path(settings, "drift", day)
    result = run_drift_report(
        marts["interactions"],
        marts["user_features"],
        marts["item_features"],
        settings.monitoring,
        current_date=day,
        reference_scores=reference_scores,
        current_scores=current_scores,
        html_path=path,
        seed=settings.seed,
    )
    with recgen.connect() as con:
        rows = save_drift_result(con, result)
    context.log.info(result.message())
    return dg.MaterializeResult(
        metadata={
            "run_date": dg.MetadataValue.text(result.run_date.isoformat()),
            "run_id": dg.MetadataValue.text(result.run_id),
            "drift_share": dg.MetadataValue.float(result.drift_share),
            "drift_share_threshold": dg.MetadataValue.float(result.threshold),
            "drift_detected": dg.MetadataValue.bool(result.drift_detected),
            "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
            "columns": dg.MetadataValue.md(result.to_frame().to_markdown(index=False, floatfmt=".4f")),
            "skipped_columns": dg.MetadataValue.json(result.skipped_columns),
            "score_model_version": dg.MetadataValue.text(score_version or "none"),
            "reference_rows": dg.MetadataValue.json(result.reference_rows),
            "current_rows": dg.MetadataValue.json(result.current_rows),
            "rows_written": dg.MetadataValue.int(rows),
            "report_path": dg.MetadataValue.path(str(path)),
            "report_url": dg.MetadataValue.url(path.as_uri()),
            **chart_metadata(result.charts),
        }
    )


@dg.asset(
    group_name="reports",
    deps=[*MART_DEPS, EVALUATION_DEP],
    kinds={"evidently"},
    pool="duckdb",
    description="Evidently recsys metrics (NDCG, precision, recall, MAP, MRR, hit rate, personalization, "
    "diversity, novelty, serendipity, popularity bias) of the monitored model; HTML in reports/quality/.",
)
def quality_report(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings = recgen.settings()
    marts, recs, relevant, model = _evaluation_inputs(recgen, settings)
    day = _latest_day(marts["interactions"])
    path = _report_path(settings, "quality", day)
    inter = marts["interactions"]
    evaluation_csv = settings.reports_dir / "evaluation.csv"  # written by the evaluation asset upstream
    result = run_quality_report(
        recs,
        relevant,
        inter[inter["split"] != "test"],
        marts["item_features"],
        k=settings.monitoring.k,
        html_path=path,
        evaluation=pd.read_csv(evaluation_csv) if evaluation_csv.exists() else None,
    )
    if result.failed:
        context.log.warning(f"Evidently metrics that did not run: {result.failed}")
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.float(float(value)) for name, value in result.metrics.items()
    }
    metadata |= {
        "model": dg.MetadataValue.text(str(model)),
        "users": dg.MetadataValue.int(result.n_users),
        "users_with_relevant": dg.MetadataValue.int(result.n_users_with_relevant),
        "failed_metrics": dg.MetadataValue.json(result.failed),
    }
    if result.html_path is not None:
        metadata["report_path"] = dg.MetadataValue.path(str(path))
        metadata["report_url"] = dg.MetadataValue.url(path.as_uri())
    metadata |= chart_metadata(result.charts)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="reports",
    deps=[*MART_DEPS, EVALUATION_DEP],
    kinds={"evidently", "duckdb"},
    pool="duckdb",
    description="NDCG@k and CTR by user attribute (age band, region, gender, occupation), top-k exposure by creator group against catalog and "
    "relevant shares, Gini of exposure, and exposure-aware re-ranking side by side; HTML and PNG charts in "
    "reports/fairness/, figures in monitoring.fairness_metrics.",
)
def fairness_report(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings = recgen.settings()
    marts, recs, relevant, model = _evaluation_inputs(recgen, settings)
    inter = marts["interactions"]
    day = _latest_day(inter)
    path = _report_path(settings, "fairness", day)
    report = run_fairness_report(
        recs,
        relevant,
        marts["user_features"],
        marts["item_features"],
        settings.monitoring,
        interactions=inter[inter["split"] == "test"],
        run_date=day,
        html_path=path,
    )
    with recgen.connect() as con:
        rows = save_fairness_metrics(con, report.result, day)
    context.log.info(report.result.message())
    for comparison in report.result.mitigation:
        context.log.info(f"re-ranking {comparison.describe()}")
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.float(value) if isinstance(value, float) else dg.MetadataValue.text(value)
        for name, value in summary_figures(report.result).items()
    }
    metadata |= {
        "model": dg.MetadataValue.text(str(model)),
        "run_date": dg.MetadataValue.text(day.isoformat()),
        "exposure": dg.MetadataValue.md(report.result.exposure.to_markdown(index=False, floatfmt=".4f")),
        "rows_written": dg.MetadataValue.int(rows),
        "report_path": dg.MetadataValue.path(str(path)),
        "report_url": dg.MetadataValue.url(path.as_uri()),
        **chart_metadata(report.charts),
    }
    if report.evidently_html_path is not None:
        metadata["evidently_report_path"] = dg.MetadataValue.path(str(report.evidently_html_path))
    return dg.MaterializeResult(metadata=metadata)


monitoring_assets = [daily_scores, drift_report, quality_report, fairness_report]
