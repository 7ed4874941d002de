"""The ranker on rating-only data (MovieLens: one-item requests): valid lists and unexposed negatives."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models import metrics
from models.history import to_hours
from models.ranking.pair_features import prior_item_counts, ranking_groups, unexposed_negatives
from models.ranking.pair_ranker import grouped_ndcg
from models.recdata import RecData


def test_one_item_requests_are_ranked_per_user_and_day() -> None:
    pairs = pd.DataFrame(
        {
            # a feed request with a slate of two, then three one-item requests (MovieLens ratings)
            "request_id": ["r1", "r1", "ml-1-10", "ml-1-20", "ml-2-10"],
            "user_id": ["1", "1", "1", "1", "2"],
            "event_ts": pd.to_datetime(
                [
                    "1997-10-01 10:00",
                    "1997-10-01 10:00",
                    "1997-10-02 20:00",
                    "1997-10-02 20:03",
                    "1997-10-02 21:00",
                ]
            ),
        }
    )
    groups = ranking_groups(pairs)
    assert list(groups) == ["r1", "r1", "user|1|1997-10-02", "user|1|1997-10-02", "user|2|1997-10-02"]

    # user 1 liked item 10 and disliked item 20 on 1997-10-02: scoring 20 above 10 must cost NDCG
    labels = np.array([1, 0, 1, 0, 1])
    right = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    wrong = np.array([0.9, 0.1, 0.2, 0.8, 0.5])
    assert grouped_ndcg(groups, labels, right) == 1.0
    assert grouped_ndcg(groups, labels, wrong) < 1.0
    # ranked per request, both orders look perfect: early stopping would see nothing
    per_request = pairs["request_id"].to_numpy()
    assert grouped_ndcg(per_request, labels, right) == grouped_ndcg(per_request, labels, wrong) == 1.0


def _rating_only_data() -> RecData:
    """Four movies; D is released after the ratings below. Impressions as marts.interactions holds them."""
    ts = pd.to_datetime
    items = pd.DataFrame(
        {"item_id": ["A", "B", "C", "D"], "published_at": ts(["1990-01-01"] * 3 + ["1997-12-01"])}
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["1", "2", "2", "1"],
            "item_id": ["A", "B", "B", "B"],
            # user 2 saw B twice on 10-01 (one click); user 1 rates B only after the cutoff
            "event_ts": ts(["1997-10-02 20:00", "1997-10-01 10:00", "1997-10-01 11:00", "1997-10-20 20:00"]),
            "clicked": [1, 1, 0, 1],
        }
    )
    empty = pd.DataFrame()
    return RecData(items, empty, empty, interactions, empty, empty, np.zeros((4, 2), dtype=np.float32))


def test_unexposed_negatives_are_unseen_published_items_with_point_in_time_counts() -> None:
    data = _rating_only_data()
    pairs = pd.DataFrame(
        {
            # user 1 liked A (a one-item request); r2 is a two-item slate: its rows get nothing
            "request_id": ["ml-1-A", "r2", "r2"],
            "user_id": ["1", "2", "2"],
            "item_id": ["A", "B", "C"],
            "item_idx": [0, 1, 2],
            "event_ts": pd.to_datetime(["1997-10-02 20:00"] * 3),
            "label": [1, 1, 0],
            "dwell_seconds": 0.0,
            "user_prior_impressions": [0, 2, 2],
            "user_prior_clicks": [0, 1, 1],
            "item_prior_impressions": [0, 2, 0],
            "item_prior_clicks": [0, 1, 0],
            "split": "train",
        }
    )
    pairs["hours"] = to_hours(pairs["event_ts"])
    negatives, source = unexposed_negatives(
        pairs, data, per_positive=3, seed=0, cutoff=pd.Timestamp("1997-10-10")
    )
    assert set(source) == {0}
    # A was shown to user 1; D was not released yet. B is fine: user 1 only rates it after the cutoff.
    assert sorted(negatives["item_id"]) == ["B", "C"]
    assert (negatives["label"] == 0).all() and (negatives["user_id"] == "1").all()
    assert (negatives["hours"] == pairs.loc[0, "hours"]).all()
    counts = negatives.set_index("item_id")
    # B: two impressions and one click on 1997-10-01, a whole day before the positive's day
    assert counts.loc["B", ["item_prior_impressions", "item_prior_clicks"]].tolist() == [2.0, 1.0]
    assert counts.loc["C", ["item_prior_impressions", "item_prior_clicks"]].tolist() == [0.0, 0.0]

    # a later cutoff: user 1 had rated B by then, so only C is left
    late, _ = unexposed_negatives(pairs, data, per_positive=3, seed=0, cutoff=pd.Timestamp("1998-01-01"))
    assert sorted(late["item_id"]) == ["C"]
    # slate data only: no negatives at all
    slate, _ = unexposed_negatives(
        pairs.iloc[1:], data, per_positive=3, seed=0, cutoff=pd.Timestamp("1998-01-01")
    )
    assert slate.empty


def test_prior_item_counts_use_whole_days_before() -> None:
    data = _rating_only_data()
    days = np.array([np.datetime64("1997-10-01", "D"), np.datetime64("1997-10-02", "D")]).astype(np.int64)
    imp, clk = prior_item_counts(data.interactions, data.item_index, np.array([1, 1]), days)
    assert imp.tolist() == [0.0, 2.0] and clk.tolist() == [0.0, 1.0]  # the same day does not count


def _loop_negatives(
    pairs: pd.DataFrame, data: RecData, per_positive: int, seed: int, cutoff: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """The per-positive loop the vectorized selection replaced (reference for its rows and items)."""
    request = pairs["request_id"].astype(str)
    rows = np.flatnonzero(
        (request.map(request.value_counts()) == 1).to_numpy() & (pairs["label"].to_numpy() > 0)
    )
    before = data.interactions[data.interactions["event_ts"] < cutoff]
    shown = (
        pd.Series(data.item_idx(before["item_id"])).groupby(before["user_id"].to_numpy()).agg(set).to_dict()
    )
    published = np.nan_to_num(to_hours(data.items["published_at"]), nan=-np.inf)
    rng = np.random.default_rng(seed)
    picked_rows, picked_items = [], []
    for r in rows:
        draw = rng.integers(0, data.n_items, size=4 * per_positive)
        seen = shown.get(pairs["user_id"].iloc[r], set())
        keep = [
            int(i)
            for i in dict.fromkeys(draw.tolist())
            if i not in seen and published[i] <= pairs["hours"].iloc[r]
        ]
        picked_rows.extend([r] * len(keep[:per_positive]))
        picked_items.extend(keep[:per_positive])
    return np.asarray(picked_rows), np.asarray(picked_items)


def _loop_grouped_ndcg(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """The per-group loop over ``metrics.ndcg_at_k`` that the vectorized ``grouped_ndcg`` replaced."""
    frame = pd.DataFrame({"g": groups, "y": labels, "s": scores})
    values = []
    for _, part in frame.groupby("g", sort=False):
        if part["y"].sum() <= 0:
            continue
        ranked = metrics.rank_by_score(list(range(len(part))), part["s"].to_numpy())
        values.append(metrics.ndcg_at_k(ranked, set(np.flatnonzero(part["y"].to_numpy() > 0).tolist()), k))
    return metrics.mean_defined(values)


def test_vectorized_negatives_and_ndcg_equal_the_loops() -> None:
    rng = np.random.default_rng(3)
    n_items, n_users, n_rows = 40, 12, 300
    items = pd.DataFrame(
        {
            "item_id": [f"m{i:02d}" for i in range(n_items)],
            # a few movies come out during the window: they may not be negatives before their release
            "published_at": pd.Timestamp("1997-09-01")
            + pd.to_timedelta(
                np.where(rng.random(n_items) < 0.2, rng.integers(0, 40, n_items), -100), unit="D"
            ),
        }
    )
    ts = pd.Timestamp("1997-09-01") + pd.to_timedelta(rng.integers(0, 60 * 24, n_rows), unit="min") * 60
    users = [f"{u}" for u in rng.integers(0, n_users, n_rows)]
    shown = rng.integers(0, n_items, n_rows)
    interactions = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items["item_id"].to_numpy()[shown],
            "event_ts": ts,
            "clicked": rng.integers(0, 2, n_rows),
        }
    )
    empty = pd.DataFrame()
    data = RecData(items, empty, empty, interactions, empty, empty, np.zeros((n_items, 2), dtype=np.float32))
    pairs = interactions.assign(
        request_id=[f"ml-{i}" for i in range(n_rows)], item_idx=shown, label=interactions["clicked"],
        dwell_seconds=0.0, item_prior_impressions=0.0, item_prior_clicks=0.0, hours=to_hours(ts),
    )  # fmt: skip
    pairs.loc[:9, "request_id"] = "slate"  # a slate's rows get no negatives
    cutoff = pd.Timestamp("1997-10-10")
    negatives, source = unexposed_negatives(pairs, data, per_positive=3, seed=7, cutoff=cutoff)
    ref_rows, ref_items = _loop_negatives(pairs, data, per_positive=3, seed=7, cutoff=cutoff)
    assert len(source) > 100
    assert source.tolist() == ref_rows.tolist() and negatives["item_idx"].tolist() == ref_items.tolist()

    groups = ranking_groups(pairs)
    scores = rng.normal(size=n_rows).round(1)  # rounded: ties, broken by row order in both
    labels = pairs["label"].to_numpy()
    assert grouped_ndcg(groups, labels, scores) == _loop_grouped_ndcg(groups, labels, scores)
    assert grouped_ndcg(groups, labels, scores, k=3) == _loop_grouped_ndcg(groups, labels, scores, k=3)
