"""Quality report: Evidently's recsys figures agree with plain pandas, and the metrics that run are kept."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.monitoring.quality import quality_metrics, recsys_frame, run_quality_report
from tests.models.monitoring.conftest import make_recs

K = 10


def pandas_figures(recs: pd.DataFrame, relevant: pd.DataFrame, k: int) -> dict[str, float]:
    """NDCG, precision, recall, hit rate and MRR at k, averaged over users with relevant items."""
    rows = []
    for user, items in relevant.groupby("user_id")["item_id"]:
        rel = set(items)
        top = recs[(recs["user_id"] == user) & (recs["rank"] <= k)].sort_values("rank")
        hits = [r for r, i in zip(top["rank"], top["item_id"], strict=True) if i in rel]
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
        rows.append(
            {
                "ndcg": sum(1 / math.log2(r + 1) for r in hits) / idcg,
                "precision": len(hits) / k,  # every list here has at least k items
                "recall": len(hits) / len(rel),
                "hit_rate": float(bool(hits)),
                "mrr": 1 / hits[0] if hits else 0.0,
            }
        )
    return pd.DataFrame(rows).mean().to_dict()


@pytest.fixture(scope="module")
def quality_case(world, tmp_path_factory: pytest.TempPathFactory):
    recs, relevant = make_recs(world, group_quality={"55+": 0.5}, independent_penalty=0.5, seed=3)
    inter = world["interactions"]
    path = tmp_path_factory.mktemp("quality") / "quality.html"
    result = run_quality_report(
        recs, relevant, inter[inter["split"] == "train"], world["item_features"], K, path
    )
    return recs, relevant, result


@pytest.mark.slow
def test_every_recsys_metric_runs_in_evidently_0_7_23(quality_case) -> None:
    _, _, result = quality_case
    assert result.failed == {}
    assert set(result.metrics) == set(quality_metrics(K, ["f"]))
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert result.html_path is not None and result.html_path.stat().st_size > 100_000


@pytest.mark.slow
def test_evidently_figures_match_pandas(quality_case) -> None:
    recs, relevant, result = quality_case
    expected = pandas_figures(recs, relevant, K)
    assert result.metrics[f"ndcg@{K}"] == pytest.approx(expected["ndcg"])
    assert result.metrics[f"precision@{K}"] == pytest.approx(expected["precision"])
    assert result.metrics[f"recall@{K}"] == pytest.approx(expected["recall"])
    assert result.metrics[f"hit_rate@{K}"] == pytest.approx(expected["hit_rate"])
    assert result.metrics[f"mrr@{K}"] == pytest.approx(expected["mrr"])
    # Evidently's Gini is over the items that were recommended at least once
    counts = recs[recs["rank"] <= K]["item_id"].value_counts().sort_values().to_numpy()
    n = len(counts)
    gini = np.sum((2 * np.arange(1, n + 1) - n - 1) * counts) / ((n - 1) * counts.sum())
    assert result.metrics["popularity_gini"] == pytest.approx(gini)
    assert result.n_users_with_relevant == relevant["user_id"].nunique()


def test_recsys_frame_adds_missed_relevant_items_below_the_list() -> None:
    recs = pd.DataFrame(
        {"user_id": ["u"] * 3, "item_id": ["a", "b", "c"], "rank": [1, 2, 3], "score": [3.0, 2, 1]}
    )
    relevant = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["b", "z"]})
    frame = recsys_frame(recs, relevant).set_index("item_id")
    assert frame["target"].to_dict() == {"a": 0, "b": 1, "c": 0, "z": 1}
    assert frame.loc["z", "prediction"] < frame["prediction"].drop("z").min()


def test_recsys_frame_keeps_rank_order_when_scores_disagree() -> None:
    # a re-ranked list: rank 1 has the lower model score; Evidently ranks by score, so 1/rank stands in
    recs = pd.DataFrame({"user_id": ["u"] * 2, "item_id": ["a", "b"], "rank": [1, 2], "score": [0.1, 0.9]})
    frame = recsys_frame(recs, pd.DataFrame({"user_id": ["u"], "item_id": ["a"]})).set_index("item_id")
    assert frame.loc["a", "prediction"] > frame.loc["b", "prediction"]


@pytest.mark.slow
def test_without_scores_the_score_metric_is_left_out(world, tmp_path: Path) -> None:
    recs, relevant = make_recs(world, seed=3)
    inter = world["interactions"]
    result = run_quality_report(
        recs.drop(columns="score"), relevant, inter[inter["split"] == "train"], world["item_features"], K
    )
    assert "score_distribution_entropy" not in result.metrics and result.failed == {}
    assert result.metrics[f"ndcg@{K}"] == pytest.approx(pandas_figures(recs, relevant, K)["ndcg"])
