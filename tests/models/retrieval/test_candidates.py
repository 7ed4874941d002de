"""Multi-source candidates, and the stacked ranker over them against its own sources on a held-out window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models import metrics
from models.recdata import RecData
from models.recommender import StackedFullStack, fit_stacked_ranker, stacking_windows
from models.retrieval.baselines import ItemKNNRecommender, PopularityRecommender
from models.retrieval.candidates import FreshPopularity, generate_candidates
from models.retrieval.index import mask_seen
from tests.models.conftest import START, marts_from_events, tiny_settings


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


def two_group_world(
    n_days: int = 14, n_clusters: int = 6, cluster_size: int = 12, per_cluster: int = 5, n_trend: int = 40,
    hot: int = 6, newcomers_per_day: int = 8, loyal_rate: float = 0.6, seed: int = 0,
) -> RecData:  # fmt: skip
    """A world where each candidate source is right for about half of the users, and which half is visible.

    Loyal users (``l*``) each belong to one of ``n_clusters`` item clusters and, over the days, engage with
    their own cluster's items only: item co-occurrence (item-kNN) finds what they engage with next, while
    popularity never does (they never touch the trending items). Newcomers (``n*``) arrive every day with no
    history and engage with two of the ``hot`` items trending that day; the trend moves on by one item a day,
    so what was popular in the last day (recency popularity) is right for them and all-time popularity (and
    item-kNN, which falls back to it for users without history) is stale. A ranker that reads the history
    length and the sources' scores can follow item-kNN for the loyal users and recency popularity for the
    newcomers; neither source alone can. Item text is noise, so nothing else tells the groups' items apart.
    """
    rng = np.random.default_rng(seed)
    n_items = n_clusters * cluster_size + n_trend
    item_ids = [f"i{i:04d}" for i in range(n_items)]
    rows: list[tuple[object, ...]] = []

    def engage(user: str, item: int, day: int) -> None:
        ts = START + pd.Timedelta(days=day, hours=int(rng.integers(6, 23)))
        rows.append((f"{user}-{len(rows)}", user, item_ids[item], ts, 0, 1, 30.0))

    loyal = [f"l{u:03d}" for u in range(n_clusters * per_cluster)]
    for u, user in enumerate(loyal):
        order = iter(rng.permutation(cluster_size) + (u % n_clusters) * cluster_size)
        for day in range(n_days):
            for _ in range(rng.poisson(loyal_rate)):
                item = next(order, None)
                if item is not None:
                    engage(user, int(item), day)
    newcomers = []
    first_trend = n_clusters * cluster_size
    for day in range(n_days):
        trending = first_trend + (day + np.arange(hot)) % n_trend
        for k in range(newcomers_per_day):
            newcomers.append(f"n{day:02d}{k}")
            for item in rng.choice(trending, size=2, replace=False):
                engage(newcomers[-1], int(item), day)
    inter = pd.DataFrame(
        rows, columns=["request_id", "user_id", "item_id", "event_ts", "position", "clicked", "dwell_seconds"]
    )
    user_ids = loyal + newcomers
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "user_group": rng.choice(["18-34", "35-54", "55+"], size=len(user_ids)),
            "region": "north",
            "preferred_style": "casual",
            "declared_interests": None,
        }
    )
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Item {i}" for i in range(n_items)],
            "body": [f"About item {i}." for i in range(n_items)],
            "category": [f"c{i // cluster_size}" if i < first_trend else "trend" for i in range(n_items)],
            "tags": "",
            "creator_id": [f"c{i % 10}" for i in range(n_items)],
            "creator_group": "large",
            "published_at": START - pd.Timedelta(days=3),
        }
    )
    text = rng.normal(size=(n_items, 16))
    return RecData.from_frames(
        *marts_from_events(inter, users, items, text, n_days, valid_days=2, test_days=2)
    )


@pytest.fixture(scope="module")
def two_groups() -> RecData:
    """The two-group world (14 days: three 2-day stacking windows, then valid and test)."""
    return two_group_world()


def _test_ndcg(lists: dict[str, list[int]], relevant: dict[str, set[int]], users: list[str]) -> float:
    return float(np.mean([metrics.ndcg_at_k(lists[u], relevant[u], 10) for u in users]))


def test_stacked_ranker_beats_its_best_candidate_source_on_the_held_out_window(two_groups: RecData) -> None:
    data = two_groups
    settings = tiny_settings(
        ranker={
            "stack_epochs": 8, "hidden_dim": 16, "stack_learning_rate": 1e-2, "stack_windows": 4, "patience": 3,
            "stack_batch_users": 16,
        }
    )  # fmt: skip
    fit = fit_stacked_ranker(data, _sources, N_PER_SOURCE, settings, seed=0)
    assert len(fit.log) >= 1 and fit.candidate_recall > 0
    # the evaluation protocol (no refit): everything learned on the train view, observed at the test cutoff
    train_view = data.as_of(data.split_start("valid"))
    view = data.as_of(data.split_start("test"))
    relevant = data.relevant("test")
    users = sorted(relevant)
    groups = {
        "loyal": [u for u in users if u.startswith("l")],
        "newcomers": [u for u in users if u.startswith("n")],
    }
    assert min(len(g) for g in groups.values()) >= 0.4 * len(users)  # both groups matter to the mean
    stack = StackedFullStack(_sources, N_PER_SOURCE, fit.ranker, fit.mmr_lambda).fit(train_view).observe(view)
    stacked = {u: p.tolist() for u, p in stack.ranked_positions(users, 10).items()}
    per_source = {}
    for name, source in _sources(train_view).items():
        source.observe(view)
        scores = mask_seen(source.score_all(users).float().clone(), view.exclusions(users))
        top = torch.topk(scores, 10, dim=1).indices.numpy()
        per_source[name] = {u: top[r].tolist() for r, u in enumerate(users)}
    ndcg = {name: _test_ndcg(lists, relevant, users) for name, lists in per_source.items()}
    by_group = {
        name: {g: _test_ndcg(lists, relevant, members) for g, members in groups.items()}
        for name, lists in {**per_source, "stacked": stacked}.items()
    }
    # each source is right on one group only: item-kNN on the loyal users, recency popularity on newcomers
    assert by_group["itemknn"]["loyal"] > 2 * by_group["itemknn"]["newcomers"], by_group
    assert by_group["fresh"]["newcomers"] > 2 * by_group["fresh"]["loyal"], by_group
    # the ranker combines them: near the right source on each group, so clearly above the best single one
    assert by_group["stacked"]["loyal"] > 0.8 * by_group["itemknn"]["loyal"], by_group
    assert by_group["stacked"]["newcomers"] > 0.8 * by_group["fresh"]["newcomers"], by_group
    best = max(ndcg.values())
    assert _test_ndcg(stacked, relevant, users) > best + 0.03, (by_group, ndcg)


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
