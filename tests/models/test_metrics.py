"""Metric functions against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models import metrics


def test_recall_counts_hits_over_all_relevant_items() -> None:
    # relevant {a, c, z}; top-3 of [a, b, c, d] holds a and c -> 2/3; z is never found
    assert metrics.recall_at_k(["a", "b", "c", "d"], {"a", "c", "z"}, 3) == pytest.approx(2 / 3)
    # k=1 sees only a -> 1/3
    assert metrics.recall_at_k(["a", "b", "c", "d"], {"a", "c", "z"}, 1) == pytest.approx(1 / 3)


def test_ndcg_by_hand() -> None:
    # hits at ranks 1 and 3: DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5
    # ideal for 2 relevant items: 1/log2(2) + 1/log2(3) = 1 + 0.6309 = 1.6309
    assert metrics.ndcg_at_k(["a", "b", "c"], {"a", "c"}, 3) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # a perfect list scores 1
    assert metrics.ndcg_at_k(["a", "c", "b"], {"a", "c"}, 3) == pytest.approx(1.0)
    # more relevant items than k: the ideal list is k hits, so 2 hits in top-2 is still perfect
    assert metrics.ndcg_at_k(["a", "c"], {"a", "c", "d"}, 2) == pytest.approx(1.0)


def test_mrr_and_hit_rate() -> None:
    # the first relevant item is at rank 2 -> 1/2
    assert metrics.mrr_at_k(["x", "a", "b"], {"a", "b"}, 3) == pytest.approx(0.5)
    # it is outside the top 1 -> 0, and there is no hit at 1
    assert metrics.mrr_at_k(["x", "a"], {"a"}, 1) == 0.0
    assert metrics.hit_rate_at_k(["x", "a"], {"a"}, 1) == 0.0
    assert metrics.hit_rate_at_k(["x", "a"], {"a"}, 2) == 1.0


def test_empty_relevant_set_is_undefined_and_left_out_of_the_mean() -> None:
    assert metrics.recall_at_k(["a"], set(), 10) is None
    assert metrics.ndcg_at_k(["a"], [], 10) is None
    assert metrics.mrr_at_k(["a"], set(), 10) is None
    assert metrics.hit_rate_at_k(["a"], set(), 10) is None
    # users: hit (1.0), miss (0.0), undefined (None) -> mean over the two defined users = 0.5, not 1/3
    assert metrics.mean_defined([1.0, 0.0, None]) == pytest.approx(0.5)
    assert math.isnan(metrics.mean_defined([None, None]))


def test_empty_recommendation_list_scores_zero() -> None:
    assert metrics.recall_at_k([], {"a"}, 10) == 0.0
    assert metrics.ndcg_at_k([], {"a"}, 10) == 0.0


def test_duplicates_count_once() -> None:
    # [a, a, b] with relevant {a}: the repeat neither adds a hit nor pushes b out of the top 2
    assert metrics.recall_at_k(["a", "a", "b"], {"a", "b"}, 2) == pytest.approx(1.0)
    assert metrics.ndcg_at_k(["a", "a"], {"a"}, 2) == pytest.approx(1.0)


def test_rank_by_score_breaks_ties_by_input_order() -> None:
    # b and c tie at 0.5: the stable order keeps b (earlier) before c
    assert metrics.rank_by_score(["a", "b", "c", "d"], [0.1, 0.5, 0.5, 0.9]) == ["d", "b", "c", "a"]


def test_auc_with_ties_gives_half_credit() -> None:
    # positives {0.8, 0.4}, negatives {0.4, 0.1}: pairs (0.8>0.4)=1, (0.8>0.1)=1, (0.4=0.4)=0.5, (0.4>0.1)=1
    # AUC = 3.5 / 4
    assert metrics.auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)
    # all scores equal -> every pair is a tie -> 0.5
    assert metrics.auc([1, 0, 1, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_auc_matches_pairwise_definition_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 5, 200).astype(float)  # few distinct values: many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert metrics.auc(y, s) == pytest.approx(pairwise)


def test_coverage_novelty_diversity() -> None:
    # lists touch a, b, c of a 4-item catalog -> 3/4
    assert metrics.catalog_coverage([["a", "b"], ["b", "c"]], 4) == pytest.approx(0.75)
    # counts a=3, b=1 over a 2-item catalog: p(a) = (3+1)/(4+2) = 2/3, p(b) = (1+1)/6 = 1/3
    counts = {"a": 3.0, "b": 1.0}
    assert metrics.novelty([["a", "b"]], counts, 2) == pytest.approx(
        (-math.log2(2 / 3) - math.log2(1 / 3)) / 2
    )
    # orthogonal pair -> cosine 0 -> diversity 1; identical pair -> 0; mean over the two lists = 0.5
    emb = {"x": np.array([1.0, 0.0]), "y": np.array([0.0, 2.0]), "z": np.array([3.0, 0.0])}
    assert metrics.intra_list_diversity([["x", "y"]], emb) == pytest.approx(1.0)
    assert metrics.intra_list_diversity([["x", "y"], ["x", "z"]], emb) == pytest.approx(0.5)
    # a one-item list has no pairs and is skipped
    assert math.isnan(metrics.intra_list_diversity([["x"]], emb))


def test_grouped_means_excludes_undefined_users() -> None:
    per_user = pd.DataFrame(
        {"user_group": ["a", "a", "b"], "ndcg@10": [1.0, np.nan, 0.25], "recall@20": [0.5, np.nan, 1.0]}
    )
    out = metrics.grouped_means(per_user, "user_group", ["ndcg@10", "recall@20"]).set_index("group")
    # group a: one defined user (1.0); the NaN user is not averaged in, but still counted in n_users
    assert out.loc["a", "ndcg@10"] == pytest.approx(1.0)
    assert out.loc["a", "n_users"] == 2
    assert out.loc["b", "recall@20"] == pytest.approx(1.0)


def test_exposure_by_group() -> None:
    recs = {"u1": ["a", "b"], "u2": ["a", "c"]}
    relevant = {"u1": {"b"}, "u2": set()}
    groups = {"a": "large", "b": "independent", "c": "independent", "d": "large"}
    out = metrics.exposure_by_group(recs, relevant, groups, k=2).set_index("group")
    # slots: large gets a twice (2/4), independent gets b and c (2/4); catalog is 2/4 each
    assert out.loc["large", "exposure_share"] == pytest.approx(0.5)
    assert out.loc["independent", "catalog_share"] == pytest.approx(0.5)
    # independent slots: b (hit for u1), c (miss) -> precision 1/2; large: two misses -> 0
    assert out.loc["independent", "precision@2"] == pytest.approx(0.5)
    assert out.loc["large", "precision@2"] == pytest.approx(0.0)
