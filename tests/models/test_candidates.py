"""Multi-source candidates, and the stacked ranker over them against its own sources on a held-out window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import metrics
from models.baselines import ItemKNNRecommender, PopularityRecommender
from models.candidates import FreshPopularity, generate_candidates
from models.recdata import RecData
from models.recommender import StackedFullStack, fit_stacked_ranker, stacking_windows
from models.retrieval import mask_seen
from tests.models.conftest import tiny_settings


def _sources(view: RecData) -> dict[str, object]:
    return {
        "itemknn": ItemKNNRecommender(20).fit(view),
        "popularity": PopularityRecommender().fit(view),
        "fresh": FreshPopularity(1.0).fit(view),
    }


N_PER_SOURCE = {"itemknn": 15, "popularity": 10, "fresh": 10}


def test_candidates_are_the_deduplicated_union_of_every_sources_top_n(rec_data: RecData) -> None:
    view = rec_data.as_of(rec_data.split_start("test"))
    users = sorted(rec_data.relevant("test"))
    exclusions = view.exclusions(users)
    sources = _sources(view)
    cands = generate_candidates(sources, N_PER_SOURCE, users, exclusions)
    for r, items in enumerate(cands.lists()):
        assert len(items) == len(set(items.tolist()))  # de-duplicated
        assert not set(items.tolist()) & set(exclusions[r].tolist())  # nothing seen or unpublished
        expected = set()
        for s, (name, source) in enumerate(sources.items()):
            scores = mask_seen(source.score_all([users[r]]).float().clone(), [exclusions[r]])[0]
            top = torch.sort(-scores, stable=True).indices[: N_PER_SOURCE[name]].numpy()
            expected |= set(top.tolist())
            proposed = set(items[cands.proposed[r, : len(items), s]].tolist())
            assert proposed == set(top.tolist())
        assert set(items.tolist()) == expected  # the union, nothing else
    assert cands.ranks[cands.mask].min() >= 1


@pytest.mark.xfail(
    reason="not met reliably yet: on this tiny world (one 2-day training window before valid) the stacked ranker "
    "beats item-kNN on the held-out test window for some seeds (0.341, 0.346) and trails it for others (0.292 vs "
    "0.315); issue 10, ranking work",
    strict=False,
)
def test_stacked_ranker_beats_its_best_candidate_source_on_the_held_out_window(rec_data: RecData) -> None:
    settings = tiny_settings(
        ranker={
            "stack_epochs": 30,
            "hidden_dim": 32,
            "stack_learning_rate": 1e-2,
            "stack_windows": 3,
            "patience": 5,
        }
    )
    fit = fit_stacked_ranker(rec_data, _sources, N_PER_SOURCE, settings, seed=0)
    # the evaluation protocol (no refit): everything learned on the train view, observed at the test cutoff
    train_view = rec_data.as_of(rec_data.split_start("valid"))
    view = rec_data.as_of(rec_data.split_start("test"))
    relevant = rec_data.relevant("test")
    users = sorted(relevant)
    stack = StackedFullStack(_sources, N_PER_SOURCE, fit.ranker, fit.mmr_lambda).fit(train_view).observe(view)
    ranked = stack.ranked_positions(users, 10)
    stacked = np.mean([metrics.ndcg_at_k(ranked[u].tolist(), relevant[u], 10) for u in users])
    per_source = {}
    for name, source in _sources(train_view).items():
        source.observe(view)
        scores = mask_seen(source.score_all(users).float().clone(), view.exclusions(users))
        top = torch.topk(scores, 10, dim=1).indices.numpy()
        per_source[name] = np.mean(
            [metrics.ndcg_at_k(top[r].tolist(), relevant[u], 10) for r, u in enumerate(users)]
        )
    best = max(per_source.values())
    assert stacked > best, (stacked, per_source)


def test_stacking_windows_end_before_valid_and_step_by_the_stride(rec_data: RecData) -> None:
    start, end = rec_data.split_start("valid"), rec_data.split_end("valid")
    length = end - start
    windows = stacking_windows(rec_data, 10, stride_share=0.25)
    assert windows[-1] == (start, end)  # valid last: it only chooses epochs and MMR
    train = windows[:-1]
    assert len(train) >= 2
    assert all(e - s == length and e <= start for s, e in train)  # never into valid
    assert all(b[0] - a[0] == 0.25 * length for a, b in zip(train, train[1:], strict=False))
    first = rec_data.histories["event_ts"].min()
    assert all(s > first + length for s, _ in train)  # every window has one window of history before it
