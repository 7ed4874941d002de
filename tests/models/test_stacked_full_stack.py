"""The stacked full stack as evaluated and as served: the same list offline and through the serving surface,
after a save/load round trip, and for requests that carry their own history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.history import HistoryStore
from models.recdata import RecData
from models.recommender import (
    ANONYMOUS,
    Recommender,
    StackedFullStack,
    StackSources,
    fit_stacked_ranker,
    load_full_stack,
    stacking_lists,
)
from tests.models.conftest import TinyStack, tiny_settings

N_PER_SOURCE = {"ease": 15, "itemknn": 15, "popularity": 10, "fresh": 10, "two_tower": 15}


@pytest.fixture(scope="module")
def stacked(tiny_stack: TinyStack) -> StackedFullStack:
    data = tiny_stack.data
    settings = tiny_settings(ranker={"stack_epochs": 3, "hidden_dim": 16, "stack_windows": 2})
    sources = StackSources(
        ease_l2=50.0, knn_neighbors=20, fresh_half_life_days=3.0, encoder=tiny_stack.encoder
    )
    fit = fit_stacked_ranker(data, sources, N_PER_SOURCE, settings, seed=0)
    return StackedFullStack(sources, N_PER_SOURCE, fit.ranker, fit.mmr_lambda).fit(data)


def _users(data: RecData, n: int = 12) -> list[str]:
    return sorted(data.histories["user_id"].unique())[:n]


def test_the_serving_surface_gives_the_offline_list_for_known_users(stacked: StackedFullStack) -> None:
    users = _users(stacked.view)
    offline = stacked.ranked_positions(users, 10)
    served = stacked.rank_candidates(users)
    for user, ranked in zip(users, served, strict=True):
        assert np.array_equal(stacked.finalize(ranked, 10)[0], offline[user])
        seen = set(stacked.store.user_items(user).tolist())
        assert not seen & set(ranked.items.tolist())  # nothing the user engaged with is a candidate


def test_save_and_load_give_the_same_recommendations(stacked: StackedFullStack, tmp_path: Path) -> None:
    stacked.save(tmp_path / "stack")
    loaded = load_full_stack(tmp_path / "stack")
    assert isinstance(loaded, StackedFullStack)
    users = _users(stacked.view)
    assert loaded.recommend(users, 10) == stacked.recommend(users, 10)


def test_a_request_history_changes_the_list_and_its_items_are_not_recommended_back(
    stacked: StackedFullStack,
) -> None:
    rec = Recommender(stacked)
    user = _users(stacked.view, 1)[0]
    plain = [r.item_id for r in rec.recommend(user, k=10)]
    extra = plain[:3]  # the user just read the top three
    with_history = [r.item_id for r in rec.recommend(user, history_item_ids=extra, k=10)]
    assert not set(extra) & set(with_history)
    assert with_history != plain
    anonymous = rec.recommend(None, history_item_ids=extra, k=10)
    assert len(anonymous) == 10 and not set(extra) & {r.item_id for r in anonymous}
    cold = rec.recommend(None, k=10)
    assert len(cold) == 10  # no history at all: popular and fresh candidates still rank


def test_the_request_view_holds_only_the_requesting_users_rows(stacked: StackedFullStack) -> None:
    user = _users(stacked.view, 1)[0]
    items = stacked.store.user_items(user)
    store = HistoryStore.from_sequences({ANONYMOUS: [int(items[0])]}, 0.0)
    view = stacked._request_view([ANONYMOUS], store)
    assert set(view.histories["user_id"]) == {ANONYMOUS}
    assert view.histories["item_id"].tolist() == [stacked.item_ids[items[0]]]
    assert view.histories["event_ts"].max() < stacked.now


def test_bagged_fits_are_blended_with_equal_shares_of_each_kinds_weight(tiny_stack: TinyStack) -> None:
    """stack_bags = 2: two torch and two LightGBM fits with derived seeds, the torch weight split between its
    two fits; the bagged blend scores unlike a single fit's."""
    from models.ranking.blended_ranker import BlendedStackedRanker

    settings = tiny_settings(
        ranker={
            "stack_epochs": 2,
            "hidden_dim": 16,
            "stack_windows": 2,
            "stack_bags": 2,
            "stack_gbdt_rounds": 20,
        }
    )
    sources = StackSources(
        ease_l2=50.0, knn_neighbors=20, fresh_half_life_days=3.0, encoder=tiny_stack.encoder
    )
    fit = fit_stacked_ranker(tiny_stack.data, sources, N_PER_SOURCE, settings, seed=0)
    assert isinstance(fit.ranker, BlendedStackedRanker)
    assert [type(m).__name__ for m in fit.ranker.members] == [
        "StackedRanker", "StackedRanker", "GBDTStackedRanker", "GBDTStackedRanker"
    ]  # fmt: skip
    assert fit.ranker.weights == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert sorted(set(zip(fit.log["member"], fit.log["bag"], strict=True))) == [
        ("lightgbm", 0), ("lightgbm", 1), ("torch", 0), ("torch", 1)
    ]  # fmt: skip
    valid = stacking_lists(tiny_stack.data, sources, N_PER_SOURCE, settings).valid
    first, second = (m.score(valid) for m in fit.ranker.members[:2])
    assert not np.allclose(first[valid.mask], second[valid.mask])  # different seeds, different rankers
