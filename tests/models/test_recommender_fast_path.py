"""The serving path reads per-row arrays where it joined frames: it must give exactly what the frames gave.

Each test computes the straightforward way inline (the pandas joins the serving path had before it was made
fast, or the general code path it short-cuts) and compares: same candidates, features, logits, top-k, profile
and reasons, so a speed-up cannot silently change a recommendation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.evaluation import full_stack
from models.history import HistoryStore
from models.interests import build_interest_profile, event_weights
from models.ranking.pair_features import TWO_TOWER_FEATURE, build_pair_inputs
from models.ranking.rerank import mmr_rerank
from models.recommender import ANONYMOUS, SERVING_SCORE_BATCH, FullStackModel, Recommender
from models.retrieval.two_tower import ColdStart, cold_start_user_vectors, user_vectors_at
from tests.models.conftest import TinyStack


@pytest.fixture(scope="module")
def served(tiny_stack: TinyStack) -> Recommender:
    """The full stack as of the median user's first event: half the users are cold-start there."""
    data = tiny_stack.data
    cutoff = data.histories.groupby("user_id")["event_ts"].min().median()
    model = full_stack(tiny_stack.settings, tiny_stack.encoder, tiny_stack.ranker, 0.8).fit(
        data.as_of(cutoff)
    )
    return Recommender(model)


def _users(model: FullStackModel) -> list[str]:
    """Users with and without history, and one the snapshot does not know."""
    users = model.users["user_id"].tolist()
    cold = [u for u in users if u not in model.store.offsets]
    warm = [u for u in users if u in model.store.offsets]
    assert cold and warm, "the tiny world should have users of both kinds"
    return warm[:12] + cold[:4] + ["not-in-the-snapshot"]


def _frame_path(model: FullStackModel, users: list[str]):
    """rank_candidates the straightforward way: a pairs frame and build_pair_inputs (the training path)."""
    hours = np.full(len(users), model.query_hours)
    vecs, windows = user_vectors_at(model.encoder, model.store, users, hours, model.space.vecs, model.cold)
    cands = model.index.candidates(
        vecs, model.exclusions(users), model.retrieval.n_candidates, model.retrieval.n_popular,
        model.retrieval.n_fresh,
    )  # fmt: skip
    codes = np.repeat(np.arange(len(users)), [len(c) for c in cands.items])
    inputs = build_pair_inputs(
        model._pairs(users, cands.items), model.ctx, model.ranker, (codes, vecs, windows)
    )
    return cands, inputs, model.ranker.score(inputs, SERVING_SCORE_BATCH)  # the batching rank_candidates uses


def test_request_features_and_logits_equal_the_frame_path(served: Recommender) -> None:
    model = served.model
    users = _users(model)
    cands, expected, expected_logits = _frame_path(model, users)
    hours = np.full(len(users), model.query_hours)
    vecs, windows = user_vectors_at(model.encoder, model.store, users, hours, model.space.vecs, model.cold)
    got = model._pair_inputs(users, cands.items, model.ctx, (vecs, windows))
    np.testing.assert_array_equal(got.candidate, expected.candidate)
    np.testing.assert_array_equal(got.dense, expected.dense)
    np.testing.assert_array_equal(got.user_group, expected.user_group)
    np.testing.assert_array_equal(got.region, expected.region)
    assert (got.user_group > 0).any() and (got.dense[:, 0] > 0).any()  # the lookups found real rows
    assert torch.equal(got.user_vec, expected.user_vec)
    ranked = model.rank_candidates(users)
    np.testing.assert_array_equal(np.concatenate([r.ranker_logit for r in ranked]), expected_logits)


def test_top_k_equals_the_frame_path(served: Recommender) -> None:
    model = served.model
    users = _users(model)
    cands, inputs, logits = _frame_path(model, users)
    ranked = model.rank_candidates(users)
    start = 0
    for row, user in enumerate(users):
        n = len(cands.items[row])
        scores = (
            logits[start : start + n]
            + model.retrieval_weight * inputs.dense[start : start + n, TWO_TOWER_FEATURE]
        )
        start += n
        expected = mmr_rerank(cands.items[row], scores, model.text_vecs, 10, model.mmr_lambda)
        got = model.finalize(ranked[row], 10)[0]
        np.testing.assert_array_equal(got, expected, err_msg=user)


def _merged_profile(served: Recommender, user_id: str | None, extra: list[str]):
    """Recommender.profile as it was: the history rows joined to the whole item table with a pandas merge."""
    model = served.model
    rows = []
    if user_id is not None:
        rows.append(model.histories[model.histories["user_id"] == user_id])
    extra = [i for i in extra if i in model.item_index]
    if extra:
        rows.append(
            pd.DataFrame(
                {"user_id": user_id or ANONYMOUS, "item_id": extra, "event_ts": model.now,
                 "dwell_seconds": 0.0, "rating": np.nan}
            )
        )  # fmt: skip
    history = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["item_id", "event_ts", "dwell_seconds", "rating"])
    )
    joined = history.merge(
        model.items[["item_id", "title", "body", "category", "tags"]], on="item_id", how="left"
    )
    user_rows = model.users.set_index("user_id", drop=False)
    user_row = user_rows.loc[user_id].to_dict() if user_id in user_rows.index else None
    return build_interest_profile(
        user_id or ANONYMOUS, joined, user_row, top_k=5, idf=served.idf, now=model.now,
        n_keywords=model.encoder.cfg.top_keywords,
    )  # fmt: skip


def test_profiles_equal_the_merge(served: Recommender) -> None:
    model = served.model
    recent = model.item_ids[[3, 7, 11]].tolist() + ["no-such-item"]
    cases = [(u, []) for u in _users(model)] + [(u, recent) for u in _users(model)[:3]] + [(None, recent)]
    for user, extra in cases:
        assert served.profile(user, extra) == _merged_profile(served, user, extra), (user, extra)
    assert any(not served.profile(u).cold_start for u, _ in cases if u)


def test_served_items_and_reasons_read_the_catalog_row(served: Recommender) -> None:
    model = served.model
    user = _users(model)[0]
    profile = served.profile(user)
    for item in served.recommend(user_id=user, k=10):
        pos = model.item_index[item.item_id]
        row = model.items.iloc[pos]
        assert (item.title, item.category) == (str(row["title"]), str(row["category"]))
        assert served.item_row(pos) == {c: row[c] for c in ("item_id", "title", "body", "category", "tags")}
        for style in ("concise", "formal"):
            assert served.explain(profile, row.to_dict(), style) == served.explain(
                profile, served.item_row(pos), style
            )


def test_cold_start_cache_gives_the_uncached_vectors(served: Recommender) -> None:
    model = served.model
    cold: ColdStart = model.cold
    users = list(cold.declared)[:20] + ["unknown"]
    declared = [cold.declared.get(u, []) for u in users]
    args = (model.space.vecs, cold.categories, cold.popularity, cold.interest_weight)
    expected = cold_start_user_vectors(declared, *args)
    assert torch.equal(cold.vectors(users, model.space.vecs), expected)
    assert torch.equal(cold.vectors(users, model.space.vecs), expected)  # from the cache
    other = torch.nn.functional.normalize(model.space.vecs + 0.5, dim=-1)  # another catalog resets it
    assert torch.equal(cold.vectors(users, other), cold_start_user_vectors(declared, other, *args[1:]))


def test_history_ends_are_the_same_for_few_and_many_rows(served: Recommender) -> None:
    store: HistoryStore = served.model.store
    users = np.asarray((_users(served.model) * 8)[:100], dtype=object)
    hours = np.linspace(store.hours.min() - 1, store.hours.max() + 1, len(users))
    many = store.ends_before(users, hours)  # > 64 rows: the grouped path
    few = [store.ends_before(users[s : s + 10], hours[s : s + 10]) for s in range(0, len(users), 10)]
    for got, expected in zip(np.concatenate([f for f, _ in few]), many[0], strict=True):
        assert got == expected
    np.testing.assert_array_equal(np.concatenate([e for _, e in few]), many[1])
    assert (many[1] > many[0]).any()


def test_event_weights_equal_the_pandas_formula(served: Recommender) -> None:
    h = served.model.histories.head(50).copy()
    h.loc[h.index[:5], "dwell_seconds"] = np.nan
    now = served.model.now
    ts = pd.to_datetime(h["event_ts"])
    age = ((now - ts) / pd.Timedelta(days=1)).clip(lower=0).to_numpy(dtype=float)
    dwell = 1.0 + np.log1p(h["dwell_seconds"].fillna(0).clip(lower=0).to_numpy(float)) / 4.0
    rating = h["rating"].astype(float).to_numpy()
    expected = 0.5 ** (age / 7.0) * dwell * np.where(np.isnan(rating), 1.0, rating / 3.0)
    np.testing.assert_array_equal(event_weights(h, now), expected)
    columns = {c: h[c].to_numpy() for c in ("event_ts", "dwell_seconds", "rating")}  # serving's arrays
    assert columns["event_ts"].dtype.kind == "M"
    np.testing.assert_array_equal(event_weights(columns, now), expected)


def test_batched_requests_get_the_single_request_top_k(served: Recommender) -> None:
    # serving batches concurrent requests; batch shapes move float sums in the last bits, never the answer
    model = served.model
    users = _users(model)
    together = model.rank_candidates(users)
    for user, ranked in zip(users, together, strict=True):
        alone = model.rank_candidates([user])[0]
        np.testing.assert_array_equal(ranked.items, alone.items)
        np.testing.assert_allclose(ranked.ranker_logit, alone.ranker_logit, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(
            model.finalize(ranked, 10)[0], model.finalize(alone, 10)[0], err_msg=user
        )
