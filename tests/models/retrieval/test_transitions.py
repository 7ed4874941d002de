"""The next-item transition source: counts computed by hand on a tiny sequence, and the shared model surface."""

from __future__ import annotations

import numpy as np
import pytest

from models.recdata import RecData
from models.retrieval.transitions import TransitionRecommender, transition_matrix


def test_transition_counts_decay_with_distance_and_are_row_normalized() -> None:
    # u1 engaged with 0, 1, 2 in that order, u2 with 0, 1; within 2 steps, the second step weighs 0.5
    t = transition_matrix({"u1": np.array([0, 1, 2]), "u2": np.array([0, 1])}, 4, window=2, decay=0.5,
                          shrinkage=0.0).toarray()  # fmt: skip
    # row 0: 0 -> 1 twice (weight 2), 0 -> 2 at distance 2 once (0.5): 2 / 2.5 and 0.5 / 2.5
    assert t[0].tolist() == pytest.approx([0.0, 0.8, 0.2, 0.0])
    assert t[1].tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0])
    assert t[2].sum() == 0.0 and t[3].sum() == 0.0  # nothing followed 2; 3 was never engaged with
    # shrinkage: 0's row sums to 2.5 / (2.5 + 2.5)
    shrunk = transition_matrix({"u1": np.array([0, 1, 2]), "u2": np.array([0, 1])}, 4, 2, 0.5, 2.5)
    assert shrunk.toarray()[0].sum() == pytest.approx(0.5)
    # an item following itself is not a transition
    assert transition_matrix({"u": np.array([1, 1])}, 2, 2, 1.0, 0.0).nnz == 0


def test_a_user_is_scored_by_the_transitions_out_of_the_last_items_latest_first() -> None:
    model = TransitionRecommender(window=2, decay=0.5, recent=2, recent_decay=0.5, shrinkage=0.0)
    model.transitions = transition_matrix(
        {"u1": np.array([0, 1, 2]), "u2": np.array([0, 1])}, 4, window=2, decay=0.5, shrinkage=0.0
    )
    model.popularity = np.zeros(4)
    # u3 engaged with 3, 2, then 0: the last two are 0 (weight 1) and 2 (weight 0.5); 3 is outside `recent`
    model.user_row, model.user_recent = model._recent_rows({"u3": np.array([3, 2, 0])}, 4)
    scores = model.score_all(["u3"]).numpy()[0]
    assert scores.tolist() == pytest.approx([0.0, 0.8, 0.2, 0.0], abs=1e-5)


def test_the_fitted_source_recommends_unseen_published_items(rec_data: RecData) -> None:
    view = rec_data.as_of(rec_data.split_start("valid"))
    model = TransitionRecommender().fit(view)
    users = list(view.history_idx())[:20]
    recs = model.recommend(users, k=10)
    seen = view.seen_idx()
    for u in users:
        assert len(recs[u]) == 10
        assert not set(view.item_idx(recs[u])) & set(seen.get(u, []))
