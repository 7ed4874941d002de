"""Exposure-aware re-ranking: no-op at strength 0, closes the exposure gap as strength grows, reports its cost."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.monitoring.fairness import exposure_by_group
from models.monitoring.mitigation import compare_mitigation, exposure_rerank
from models.ranking.rerank import catalog_shares
from tests.models.monitoring.conftest import make_recs


def _ndcg(recs: pd.DataFrame, relevant: pd.DataFrame, k: int) -> float:
    """Mean NDCG@k over users with relevant items, written out independently of models.monitoring."""
    values = []
    for user, items in relevant.groupby("user_id")["item_id"]:
        rel = set(items)
        ranked = recs[(recs["user_id"] == user) & (recs["rank"] <= k)]
        dcg = sum(
            1 / math.log2(r + 1) for r, i in zip(ranked["rank"], ranked["item_id"], strict=True) if i in rel
        )
        values.append(dcg / sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1)))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def biased(world):
    return make_recs(world, group_quality={"55+": 0.0}, independent_penalty=1.5, seed=4)


def test_strength_zero_keeps_the_model_order(world, biased) -> None:
    recs, _ = biased
    out = exposure_rerank(recs, world["item_features"], k=10, strength=0.0)
    top = recs[recs["rank"] <= 10].sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert out[["user_id", "item_id", "rank"]].equals(top[["user_id", "item_id", "rank"]])
    assert (out["original_rank"] == out["rank"]).all()


def test_rerank_lists_are_valid_and_keep_order_within_a_group(world, biased) -> None:
    recs, _ = biased
    out = exposure_rerank(recs, world["item_features"], k=10, strength=2.0)
    group = world["item_features"].set_index("item_id")["creator_group"]
    assert out.groupby("user_id")["rank"].apply(lambda r: list(r) == list(range(1, 11))).all()
    assert not out.duplicated(["user_id", "item_id"]).any()
    # every item comes from the user's own candidate list, with its model score
    merged = out.merge(recs, on=["user_id", "item_id"], suffixes=("", "_model"))
    assert len(merged) == len(out) and np.allclose(merged["score"], merged["score_model"])
    # inside one creator group the model's order is kept (only the interleaving of groups changes)
    out["group"] = out["item_id"].map(group)
    assert out.groupby(["user_id", "group"])["original_rank"].apply(lambda r: r.is_monotonic_increasing).all()


def test_gap_shrinks_with_strength_and_cost_is_reported(world, biased) -> None:
    recs, relevant = biased
    items = world["item_features"]
    comparisons = compare_mitigation(recs, relevant, items, k=10, strengths=[0.0, 0.5, 1.0, 2.0, 4.0])

    gap_before = exposure_by_group(recs, items, 10).set_index("group")["gap_vs_catalog"].abs().max()
    gaps = [c.gap_after for c in comparisons]
    assert comparisons[0].gap_after == pytest.approx(gap_before)  # strength 0 changes nothing
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.1 < gap_before
    for c in comparisons:
        reranked = exposure_rerank(recs, items, 10, c.strength)
        assert c.ndcg_before == pytest.approx(_ndcg(recs, relevant, 10))
        assert c.ndcg_after == pytest.approx(_ndcg(reranked, relevant, 10))
        assert c.ndcg_lost == pytest.approx(c.ndcg_before - c.ndcg_after)
        assert c.gap_closed == pytest.approx(gap_before - c.gap_after)
        assert f"exposure gap {c.gap_before:.3f} -> {c.gap_after:.3f}" in c.describe()
    # here the bias hid relevant independent items, so lifting them back gains NDCG (a negative cost)
    assert comparisons[2].ndcg_lost < 0


def test_rerank_costs_ndcg_when_users_engage_with_large_creators(world) -> None:
    # Relevance follows engagement: keep only relevant pairs of large creators, so every slot moved to an
    # independent creator for exposure parity is a slot taken from a relevant item: NDCG must drop.
    items = world["item_features"]
    large = set(items.loc[items["creator_group"] == "large", "item_id"])
    recs, relevant = make_recs(world, seed=5)
    relevant = relevant[relevant["item_id"].isin(large)]
    recs = recs.merge(relevant.assign(rel=1), on=["user_id", "item_id"], how="left")
    recs["score"] = recs["score"] + 3.0 * recs["rel"].fillna(0) + 0.5 * recs["item_id"].isin(large)
    recs["rank"] = recs.groupby("user_id")["score"].rank(ascending=False, method="first").astype(int)
    recs = recs.drop(columns="rel")

    (comparison,) = compare_mitigation(recs, relevant, items, k=10, strengths=[4.0])
    assert comparison.gap_after < comparison.gap_before
    assert comparison.ndcg_lost > 0 and comparison.ndcg_lost_pct > 0
    assert comparison.ndcg_lost == pytest.approx(
        _ndcg(recs, relevant, 10) - _ndcg(exposure_rerank(recs, items, 10, 4.0), relevant, 10)
    )


def test_custom_targets_and_catalog_shares(world, biased) -> None:
    recs, _ = biased
    items = world["item_features"]
    assert catalog_shares(items) == pytest.approx({"large": 50 / 80, "independent": 30 / 80})
    out = exposure_rerank(recs, items, 10, strength=8.0, target_shares={"large": 0.5, "independent": 0.5})
    share = exposure_by_group(out, items, 10).set_index("group")["exposure_share"]
    assert share["independent"] == pytest.approx(0.5, abs=0.05)
