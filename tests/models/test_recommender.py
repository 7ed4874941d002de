"""The full stack on the common surface, and the serving facade loaded from the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.evaluation import full_stack
from models.recommender import FullStackModel, Recommender, ScoredItem, TwoTowerRecommender
from models.registry import ModelRegistry
from tests.models.conftest import TOPICS, TinyStack, tiny_settings


@pytest.fixture(scope="module")
def fitted(tiny_stack: TinyStack) -> tuple[FullStackModel, TwoTowerRecommender]:
    data = tiny_stack.data
    view = data.as_of(data.split_start("test"))
    stack = full_stack(tiny_stack.settings, tiny_stack.encoder, tiny_stack.ranker, 1.0).fit(view)
    return stack, TwoTowerRecommender(tiny_stack.encoder).fit(view)


@pytest.fixture(scope="module")
def served(tiny_stack: TinyStack, tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    """The facade as the service gets it: registered, promoted, then loaded by Recommender.load."""
    home = tmp_path_factory.mktemp("home")
    settings = tiny_settings(home)
    model = full_stack(settings, tiny_stack.encoder, tiny_stack.ranker, 1.0).fit(tiny_stack.data)
    registry = ModelRegistry(settings.artifacts_dir)  # no database: the files are the source of truth
    version = registry.register("full_stack", model.save, metrics={"ndcg@10": 0.1}).version
    registry.promote_if_better("full_stack", version)
    settings.ensure_dirs()
    return Recommender.load(settings)


def test_no_seen_or_unpublished_item_is_recommended(tiny_stack: TinyStack, fitted) -> None:
    data = tiny_stack.data
    view = data.as_of(data.split_start("test"))
    users = data.users["user_id"].tolist()
    seen = view.history_idx()
    unpublished = set(view.unpublished().tolist())
    for model in fitted:
        recs = model.recommend(users, k=10)
        for user in users:
            idx = set(data.item_idx(recs[user]).tolist())
            assert not idx & set(seen.get(user, np.zeros(0)).tolist()), (model.name, user)
            assert not idx & unpublished, (model.name, user)
            assert len(recs[user]) == len(set(recs[user])) == 10  # cold-start users get k items too


def test_pair_scores_match_the_candidate_scores(fitted) -> None:
    # score() (one pair at a time, used for impression AUC) and rank_candidates() (a user's whole candidate set,
    # used to recommend) build the same features at the same time: the combined logits must agree
    stack, _ = fitted
    user = stack.users["user_id"].iloc[0]
    ranked = stack.rank_candidates([user])[0]
    got = stack.score([user] * len(ranked.items), stack.item_ids[ranked.items].tolist())
    assert np.allclose(got, ranked.combined(stack.retrieval_weight), atol=1e-4)


def test_served_recommendations_carry_titles_and_reasons(served: Recommender, tiny_stack: TinyStack) -> None:
    user = tiny_stack.data.users["user_id"].iloc[0]
    assert served.known_user(user) and not served.known_user("nobody")
    items = served.recommend(user_id=user, k=5)
    assert len(items) == 5 and all(isinstance(i, ScoredItem) for i in items)
    assert all(served.known_item(i.item_id) and i.title and i.reason for i in items)
    scores = [i.score for i in items]
    assert scores[0] == max(scores)  # MMR keeps the most relevant item first


def test_cold_start_and_anonymous_requests_get_k_items(served: Recommender) -> None:
    assert len(served.recommend(user_id="someone-new", k=7)) == 7
    assert len(served.recommend(k=7)) == 7
    profile = served.profile("someone-new")
    assert profile.cold_start and profile.n_events == 0


def test_recent_items_shift_the_list_and_are_not_recommended_back(served: Recommender) -> None:
    items = served.model.items
    science = items.loc[items["category"] == "science", "item_id"].tolist()[:4]
    recs = served.recommend(history_item_ids=science, k=10)
    ids = [r.item_id for r in recs]
    assert not set(ids) & set(science)
    # four science reads: science should be the profile's first interest and the most common recommended topic
    assert served.profile(history_item_ids=science).top_categories[0][0] == "science"
    cats = [r.category for r in recs]
    assert max(TOPICS, key=cats.count) == "science"
    assert "science" in recs[0].reason or recs[0].category != "science"


def test_exclude_and_style(served: Recommender) -> None:
    user = served.model.users["user_id"].iloc[1]
    first = served.recommend(user_id=user, k=3)
    again = served.recommend(user_id=user, k=3, exclude=[first[0].item_id], style="enthusiastic")
    assert first[0].item_id not in [r.item_id for r in again]
    profile = served.profile(user)
    text = served.explain(profile, again[0].item_id, style="formal")
    assert isinstance(text, str) and text.endswith(".")


def test_load_without_a_champion_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no champion"):
        Recommender.load(tiny_settings(tmp_path))
