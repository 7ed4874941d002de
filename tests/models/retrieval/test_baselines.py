"""Baselines on the shared surface: what each must recommend on small worlds whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.recdata import MART_COLUMNS, RecData
from models.retrieval.baselines import BPRRecommender, ItemKNNRecommender, PopularityRecommender


def _hand_made_view(rows: list[tuple[str, str]]) -> RecData:
    """A view with the given (user, item) engagements, all before the test split, six published items."""
    items = pd.DataFrame({c: None for c in MART_COLUMNS["item_features"]}, index=range(6))
    items["item_id"] = [f"i{i}" for i in range(6)]
    items["category"] = "c"
    items["creator_group"] = "large"
    items["published_at"] = pd.Timestamp("2026-01-01")
    users = pd.DataFrame({c: None for c in MART_COLUMNS["user_features"]}, index=range(4))
    users["user_id"] = [f"u{i}" for i in range(4)]
    hist = pd.DataFrame(rows, columns=["user_id", "item_id"])
    hist["event_ts"] = pd.Timestamp("2026-02-01") + pd.to_timedelta(np.arange(len(hist)), unit="min")
    hist["split"] = "train"
    hist["seq"] = hist.groupby("user_id").cumcount() + 1
    hist["dwell_seconds"] = 10.0
    hist["rating"] = np.nan
    empty = {name: pd.DataFrame(columns=cols) for name, cols in MART_COLUMNS.items()}
    bounds = pd.DataFrame(
        {
            "split": ["train", "valid", "test"],
            "starts_at": pd.to_datetime(["2026-01-01", "2026-03-01", "2026-03-02"]),
            "ends_at": pd.to_datetime(["2026-03-01", "2026-03-02", "2026-03-03"]),
        }
    )
    frames = dict(
        empty, item_features=items, user_features=users, user_histories=hist, split_boundaries=bounds
    )
    emb = pd.DataFrame({"item_id": items["item_id"], "embedding": list(np.eye(6, dtype=np.float32))})
    data = RecData.from_frames(frames, emb)
    return data.as_of(data.split_start("test"))


def test_popularity_ranks_by_count_and_skips_seen() -> None:
    # i0 engaged 3 times, i1 twice, i2 once
    view = _hand_made_view(
        [("u0", "i0"), ("u1", "i0"), ("u2", "i0"), ("u1", "i1"), ("u2", "i1"), ("u2", "i2")]
    )
    model = PopularityRecommender().fit(view)
    recs = model.recommend(["u0", "u3"], k=3)
    assert recs["u3"] == ["i0", "i1", "i2"]  # a user without history: the plain popularity order
    assert recs["u0"] == ["i1", "i2", "i3"]  # u0 saw i0; the zero-count tail keeps catalog order


def test_itemknn_follows_co_occurrence() -> None:
    # i0 and i1 always go together, i2 and i3 go together; u3 read only i0 -> i1 must come first
    view = _hand_made_view(
        [("u0", "i0"), ("u0", "i1"), ("u1", "i0"), ("u1", "i1"), ("u2", "i2"), ("u2", "i3"), ("u3", "i0")]
    )
    model = ItemKNNRecommender(n_neighbors=5).fit(view)
    assert model.recommend(["u3"], k=1)["u3"] == ["i1"]
    scores = model.score(["u3", "u3"], ["i1", "i2"])
    assert scores[0] > scores[1]


def test_bpr_loss_falls_and_recovers_the_two_blocks() -> None:
    # two disjoint taste blocks; a held-out member of u0's block should outrank the other block's items
    rows = [(u, i) for u in ("u0", "u1") for i in ("i0", "i1", "i2")] + [
        (u, i) for u in ("u2", "u3") for i in ("i3", "i4", "i5")
    ]
    rows = [r for r in rows if r != ("u0", "i2")]
    view = _hand_made_view(rows)
    model = BPRRecommender(dim=8, epochs=150, lr=0.05, weight_decay=0.0, batch_size=8, seed=1).fit(view)
    assert model.loss_history[-1] < model.loss_history[0]
    assert model.recommend(["u0"], k=1)["u0"] == ["i2"]


@pytest.mark.parametrize("model_cls", [PopularityRecommender, ItemKNNRecommender, BPRRecommender])
def test_no_seen_item_and_no_unpublished_item_is_recommended(rec_data: RecData, model_cls: type) -> None:
    view = rec_data.as_of(rec_data.split_start("test"))
    model = model_cls().fit(view)
    users = rec_data.users["user_id"].tolist()
    recs = model.recommend(users, k=20)
    seen = view.history_idx()
    unpublished = set(view.items["item_id"].to_numpy()[view.unpublished()])
    for user in users:
        seen_ids = set(view.items["item_id"].to_numpy()[seen.get(user, [])])
        assert not (set(recs[user]) & seen_ids), user
        assert not (set(recs[user]) & unpublished), user
        assert (
            len(recs[user]) == len(set(recs[user])) == 20
        )  # every user, cold ones too, gets k distinct items


def test_ease_matches_the_closed_form_worked_by_hand() -> None:
    # X (4 users x 5 items): items {0, 1} co-occur once, items {2, 3} and {3, 4} once each, so with l2 = 1
    # G + I splits into the blocks [[3, 1], [1, 2]] (inverse [[2, -1], [-1, 3]] / 5) and
    # [[2, 1, 0], [1, 3, 1], [0, 1, 2]] (inverse [[5, -2, 1], [-2, 4, -2], [1, -2, 5]] / 8).
    # B_ij = -P_ij / P_jj off the diagonal: e.g. B_01 = (1/5) / (3/5) = 1/3, B_24 = -(1/8) / (5/8) = -1/5.
    from models.retrieval.baselines import EASERecommender, ease_weights

    x = np.array(
        [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]],
        dtype=float,
    )
    by_hand = np.array(
        [
            [0, 1 / 3, 0, 0, 0],
            [1 / 2, 0, 0, 0, 0],
            [0, 0, 0, 1 / 2, -1 / 5],
            [0, 0, 2 / 5, 0, 2 / 5],
            [0, 0, -1 / 5, 1 / 2, 0],
        ]
    )
    np.testing.assert_allclose(ease_weights(x, l2=1.0), by_hand, atol=1e-12)

    # The recommender on the same engagements: u3 (items 3, 4) scores i2 at 2/5 - 1/5 = 1/5 and recommends
    # it first; u1 (item 0) gets i1 (1/3) first.
    view = _hand_made_view(
        [("u0", "i0"), ("u0", "i1"), ("u1", "i0"), ("u2", "i2"), ("u2", "i3"), ("u3", "i3"), ("u3", "i4")]
    )
    model = EASERecommender(l2=1.0).fit(view)
    np.testing.assert_allclose(model.weights.numpy()[:5, :5], by_hand, atol=1e-6)
    assert model.weights.shape == (6, 6) and float(model.weights[5].abs().sum()) == 0.0  # i5 never seen
    scores = model.score(["u3", "u1"], ["i2", "i1"])
    np.testing.assert_allclose(scores, [1 / 5, 1 / 3], atol=1e-5)
    recs = model.recommend(["u3", "u1"], k=1)
    assert recs == {"u3": ["i2"], "u1": ["i1"]}


def test_observe_reads_new_histories_without_relearning() -> None:
    # Learned on u3 = {i3, i4}; after observing a view where u1 also engaged with i3, EASE's weights are the
    # same and u1's scores follow its new history (i2 and i4 are i3's neighbours).
    from models.retrieval.baselines import EASERecommender, ItemKNNRecommender

    rows = [("u0", "i0"), ("u0", "i1"), ("u1", "i0"), ("u2", "i2"), ("u2", "i3"), ("u3", "i3"), ("u3", "i4")]
    train = _hand_made_view(rows)
    later = _hand_made_view([*rows, ("u1", "i3")])
    model = EASERecommender(l2=1.0).fit(train)
    weights = model.weights.clone()
    before = model.score(["u1"], ["i4"])[0]
    model.observe(later)
    assert torch_equal(model.weights, weights)
    assert model.score(["u1"], ["i4"])[0] > before + 0.3  # B_34 = 2/5 now counts
    assert "i3" not in model.recommend(["u1"], k=5)["u1"]  # newly seen: excluded
    knn = ItemKNNRecommender(n_neighbors=5, shrinkage=10.0).fit(train)
    plain = ItemKNNRecommender(n_neighbors=5).fit(train)
    # shrinkage divides by (sqrt(n_i n_j) + 10): i2-i3 co-occur once, n = 1 and 2
    np.testing.assert_allclose(knn.similarity[2, 3], 1 / (np.sqrt(2) + 10.0))
    np.testing.assert_allclose(plain.similarity[2, 3], 1 / np.sqrt(2))


def torch_equal(a: object, b: object) -> bool:
    import torch

    return bool(torch.equal(a, b))  # type: ignore[arg-type]


def test_recent_ease_reads_only_the_last_engagements_latest_weighted_most() -> None:
    # The same weights as EASE; u2's history in time order is i2, i3, i4 (and i2 again, counted once at its
    # latest), so with recent = 2 and decay 0.5 its row is i2 (latest) 1.0, i4 0.5 and i3 is not read.
    from models.retrieval.baselines import EASERecommender, RecentEASERecommender

    rows = [("u0", "i0"), ("u0", "i1"), ("u1", "i0"), ("u2", "i2"), ("u2", "i3"), ("u2", "i4"), ("u2", "i2")]
    rows += [("u3", "i3"), ("u3", "i4")]
    view = _hand_made_view(rows)
    plain = EASERecommender(l2=1.0).fit(view)
    recent = RecentEASERecommender(l2=1.0, recent=2, decay=0.5).fit(view)
    np.testing.assert_allclose(recent.weights.numpy(), plain.weights.numpy())
    b = plain.weights.numpy()
    expected = 1.0 * b[2] + 0.5 * b[4]
    prior = plain._popularity_prior().numpy()
    got = recent.score_all(["u2"]).numpy()[0]
    np.testing.assert_allclose(got, prior + expected, atol=1e-5)
    whole = plain.score_all(["u2"]).numpy()[0]
    assert not np.allclose(got, whole)  # the whole history also reads i3
