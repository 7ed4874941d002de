"""Recommendation quality with Evidently's recsys metrics (0.7.23), each tried alone, the working ones reported.

Evidently's recsys input is one row per (user, item) with a prediction and a relevance target. Recall and
NDCG need every relevant item, so relevant items the model did not recommend are added with a prediction
below every recommended score (they rank after the list and count only in the denominators).

Notes on 0.7.23 found while building this (the figures below are read accordingly):
- NDCG and MRR label their ``rank`` column one too high; the k-th *row* is the @k value (checked against
  :func:`models.monitoring.common.ndcg_per_user`).
- Diversity divides the sum of pairwise distances by the list length, not the number of pairs, so it ranges
  up to (k-1)/2 rather than 1.
- PopularityBias "gini" is over the recommended items only (items never recommended do not count);
  :func:`models.monitoring.fairness.exposure_gini` counts the whole catalog.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.datasets import Recsys
from evidently.metrics import (
    MAP,
    MRR,
    NDCG,
    Diversity,
    HitRate,
    Novelty,
    Personalization,
    PopularityBiasMetric,
    PrecisionTopK,
    RecallTopK,
    ScoreDistribution,
    Serendipity,
)

from models.monitoring.charts import (
    Chart,
    chart_path,
    embed_in_page,
    metric_bars_chart,
    metric_curves_chart,
    model_comparison_chart,
)
from models.monitoring.common import with_scores
from models.monitoring.html_safe import html_safe

FEATURE_PREFIX = "category__"


@dataclass
class QualityResult:
    """Figures of the quality report: metric name -> value at k, and the metrics Evidently could not compute."""

    k: int
    metrics: dict[str, float]
    failed: dict[str, str] = field(default_factory=dict)
    n_users: int = 0
    n_users_with_relevant: int = 0
    html_path: Path | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    charts: list[Chart] = field(default_factory=list)


# Metrics bounded by [0, 1]: drawn side by side in the bar chart (novelty, diversity and ARP have other scales).
BOUNDED_PREFIXES = ("ndcg@", "precision@", "recall@", "map@", "mrr@", "hit_rate@", "personalization")
CURVE_PREFIXES = ("ndcg@", "precision@", "recall@", "hit_rate@", "map@", "mrr@")
# The ranking columns of reports/evaluation.csv (the offline evaluation of every model) drawn side by side.
EVALUATION_METRICS = ("ndcg@10", "recall@20", "mrr@10", "hit@10")


def _feature_name(category: object) -> str:
    return FEATURE_PREFIX + re.sub(r"[^0-9a-zA-Z_]+", "_", str(category))


def category_features(item_features: pd.DataFrame) -> pd.DataFrame:
    """One-hot category columns per item (Evidently's diversity and serendipity take numeric item features)."""
    onehot = pd.get_dummies(item_features["category"].fillna("unknown").map(_feature_name), dtype=float)
    return pd.concat(
        [item_features[["item_id"]].reset_index(drop=True), onehot.reset_index(drop=True)], axis=1
    )


def recsys_frame(
    recs: pd.DataFrame, relevant: pd.DataFrame, features: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Evidently's recsys rows: recommendations with target 0/1 plus the relevant items that were missed."""
    recs = with_scores(recs)[0][["user_id", "item_id", "rank", "score"]].copy()
    # Evidently ranks by score; when scores do not follow the ranks (a re-ranked list), 1/rank keeps the order.
    ordered = (
        recs.sort_values(["user_id", "rank"])
        .groupby("user_id")["score"]
        .apply(lambda s: s.is_monotonic_decreasing)
    )
    if not ordered.all():
        recs["score"] = 1.0 / recs["rank"]
    relevant = relevant[["user_id", "item_id"]].drop_duplicates().assign(target=1)
    recs = recs.merge(relevant, on=["user_id", "item_id"], how="left").fillna({"target": 0})
    missed = relevant.merge(
        recs[["user_id", "item_id"]], on=["user_id", "item_id"], how="left", indicator=True
    )
    missed = missed[missed["_merge"] == "left_only"].drop(columns="_merge")
    floor = recs.groupby("user_id")["score"].min().rename("floor")
    missed = missed.merge(floor, on="user_id", how="left")
    missed["score"] = missed["floor"].fillna(recs["score"].min() if len(recs) else 0.0) - 1.0
    frame = pd.concat([recs.drop(columns="rank"), missed.drop(columns="floor")], ignore_index=True)
    frame = frame.rename(columns={"score": "prediction"})
    frame["target"] = frame["target"].astype(int)
    if features is not None:
        frame = frame.merge(features, on="item_id", how="left")
        frame[_features(features)] = frame[_features(features)].fillna(0.0)
    return frame


def _features(features: pd.DataFrame) -> list[str]:
    return [c for c in features.columns if c.startswith(FEATURE_PREFIX)]


def train_frame(train_interactions: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Positive train interactions (clicks) with item features: Evidently's ``current_train_data``."""
    clicks = train_interactions[train_interactions["clicked"] == 1][["user_id", "item_id"]].drop_duplicates()
    clicks = clicks.assign(target=1).merge(features, on="item_id", how="left")
    clicks[_features(features)] = clicks[_features(features)].fillna(0.0)
    return clicks.reset_index(drop=True)


def quality_metrics(k: int, item_features: list[str]) -> dict[str, Callable[[], object]]:
    """The Evidently recsys metrics tried by the report, by display name."""
    return {
        f"ndcg@{k}": lambda: NDCG(k=k),
        f"precision@{k}": lambda: PrecisionTopK(k=k),
        f"recall@{k}": lambda: RecallTopK(k=k),
        f"map@{k}": lambda: MAP(k=k),
        f"mrr@{k}": lambda: MRR(k=k),
        f"hit_rate@{k}": lambda: HitRate(k=k),
        "personalization": lambda: Personalization(k=k),
        "diversity": lambda: Diversity(k=k, item_features=item_features),
        "novelty": lambda: Novelty(k=k),
        "serendipity": lambda: Serendipity(k=k, item_features=item_features),
        "popularity_arp": lambda: PopularityBiasMetric(k=k, metric="arp"),
        "popularity_gini": lambda: PopularityBiasMetric(k=k, metric="gini"),
        "popularity_coverage": lambda: PopularityBiasMetric(k=k, metric="coverage"),
        "score_distribution_entropy": lambda: ScoreDistribution(k=k),
    }


def _curve(value: object) -> list[float] | None:
    """A top-k metric's values at 1..k (Evidently's ``{"value": {rank: value}}``), None for a single value."""
    if isinstance(value, dict) and isinstance(value.get("value"), dict):
        return [float(value["value"][key]) for key in sorted(value["value"], key=int)]
    return None


def quality_charts(
    result: QualityResult, html_path: Path, evaluation: pd.DataFrame | None = None
) -> list[Chart]:
    """PNGs beside the report: metrics @1..k as curves, the [0, 1] metrics at k, every model's evaluation."""
    k = result.k
    charts = []
    curves = {name: values for name, values in result.curves.items() if name.startswith(CURVE_PREFIXES)}
    if curves:
        path = metric_curves_chart(
            {name.split("@")[0]: values[:k] for name, values in curves.items()},
            chart_path(html_path, "metrics_at_k"),
            f"Ranking metrics at list lengths 1..{k}",
        )
        charts.append(Chart("metrics_at_k", path, f"NDCG, precision, recall, hit rate, MAP and MRR @1..{k}."))
    bounded = {name: v for name, v in result.metrics.items() if name.startswith(BOUNDED_PREFIXES)}
    if bounded:
        path = metric_bars_chart(bounded, chart_path(html_path, "metrics"), f"Quality metrics at k={k}")
        charts.append(Chart("metrics", path, f"The report's metrics bounded by [0, 1], at k={k}."))
    columns = [c for c in EVALUATION_METRICS if evaluation is not None and c in evaluation]
    if evaluation is not None and "model" in evaluation and columns and len(evaluation):
        path = model_comparison_chart(
            evaluation,
            columns,
            chart_path(html_path, "models"),
            "Offline evaluation: every model, test window",
        )
        charts.append(
            Chart("models", path, "Each model of reports/evaluation.csv on its held-out ranking metrics.")
        )
    return charts


def _value_at_k(value: object, k: int) -> float:
    """A metric's figure: a SingleValue as is, a top-k curve (rank, value) at its k-th row."""
    if isinstance(value, dict) and "value" in value:
        curve = [value["value"][key] for key in sorted(value["value"], key=int)]
        return float(curve[min(k, len(curve)) - 1])
    if isinstance(value, dict):
        return float(next(iter(value.values())))
    return float(value)  # type: ignore[arg-type]


def run_quality_report(
    recs: pd.DataFrame,
    relevant: pd.DataFrame,
    train_interactions: pd.DataFrame,
    item_features: pd.DataFrame,
    k: int = 10,
    html_path: Path | None = None,
    evaluation: pd.DataFrame | None = None,
) -> QualityResult:
    """Evidently recsys metrics at ``k`` (recommendations_type='score'); the HTML holds those that ran.

    ``evaluation`` (``reports/evaluation.csv``: a row per model) adds a chart comparing the models.
    """
    recs, real_scores = with_scores(recs)
    features = category_features(item_features)
    feature_names = _features(features)
    frame = recsys_frame(recs, relevant, features)
    train = train_frame(train_interactions, features)
    ranking = Recsys(
        user_id="user_id",
        item_id="item_id",
        target="target",
        prediction="prediction",
        recommendations_type="score",
    )
    definition = DataDefinition(
        numerical_columns=["prediction", "target", *feature_names],
        categorical_columns=["user_id", "item_id"],
        ranking=[ranking],
    )
    train_definition = DataDefinition(
        numerical_columns=["target", *feature_names], categorical_columns=["user_id", "item_id"]
    )
    frame, train = html_safe(frame, ["user_id", "item_id"]), html_safe(train, ["user_id", "item_id"])
    current = Dataset.from_pandas(frame, data_definition=definition)
    additional = {"current_train_data": Dataset.from_pandas(train, data_definition=train_definition)}

    metrics, failed, working, curves = {}, {}, [], {}
    candidates = quality_metrics(k, feature_names)
    if not real_scores:  # a score made up from ranks has no distribution worth reporting
        candidates.pop("score_distribution_entropy")
    for name, make in candidates.items():
        try:
            snapshot = Report([make()]).run(
                current_data=current, reference_data=None, additional_data=additional
            )
            value = snapshot.dict()["metrics"][0]["value"]
            metrics[name] = _value_at_k(value, k)
            curve = _curve(value)
            if curve is not None:
                curves[name] = curve
            working.append(make)
        except Exception as error:  # noqa: BLE001 - any metric Evidently cannot compute is reported, not fatal
            failed[name] = f"{type(error).__name__}: {error}"[:300]
    if html_path is not None and working:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        report = Report([make() for make in working])
        report.run(current_data=current, reference_data=None, additional_data=additional).save_html(
            str(html_path)
        )
    result = QualityResult(
        k=k,
        metrics=metrics,
        failed=failed,
        n_users=int(recs["user_id"].nunique()),
        n_users_with_relevant=int(relevant["user_id"].nunique()),
        html_path=html_path if working else None,
        curves=curves,
    )
    if result.html_path is not None:
        result.charts = quality_charts(result, result.html_path, evaluation)
        embed_in_page(result.html_path, result.charts, f"recgen quality charts (top-{k})")
    return result
