"""The profile model (two towers over histories) and the readable interest profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from models.history import HistoryStore, HistoryWindows, to_hours
from models.interests import build_interest_profile, build_interest_profiles, compute_idf
from models.recdata import RecData, split_list
from models.retrieval.two_tower import (
    ColdStart,
    TwoTowerRetriever,
    _scored_targets,
    evaluate_retrieval,
    recency_buckets,
    sequence_batch,
    sequence_windows,
    train_profile_model,
    user_vectors_at,
)
from tests.models.conftest import TOPICS, TinyStack, tiny_settings


def _declared(data: RecData) -> dict[str, list[str]]:
    return {
        u: split_list(v) for u, v in zip(data.users["user_id"], data.users["declared_interests"], strict=True)
    }


def test_training_lowers_the_loss_and_retrieval_beats_chance(tiny_stack: TinyStack) -> None:
    log = tiny_stack.profile_log
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    valid = evaluate_retrieval(tiny_stack.encoder, tiny_stack.data, "valid")
    # chance: ~1.5 relevant of ~78 unseen items -> recall@20 ~ 20/78 = 0.26; users click their one topic (a quarter
    # of the catalog), so a model that found the topic from text gets far more
    assert valid["recall@20"] > 0.4


def test_user_vector_points_at_the_users_topic(tiny_stack: TinyStack) -> None:
    data, encoder = tiny_stack.data, tiny_stack.encoder
    space = encoder.catalog_space(data.items, data.item_text)
    topic_items = {t: np.flatnonzero(data.items["category"].to_numpy() == t) for t in TOPICS}
    # a history of three sports items, given as a request would give it
    store = HistoryStore.from_sequences({"anon": topic_items["sports"][:3].tolist()}, hours=0.0)
    vec, _ = user_vectors_at(
        encoder, store, ["anon"], np.array([1.0]), space.vecs, ColdStart({}, np.array([]), np.zeros(0), 0.7)
    )
    cos = (space.vecs @ vec[0]).numpy()
    unseen_sports = np.setdiff1d(topic_items["sports"], topic_items["sports"][:3])
    others = np.concatenate([topic_items[t] for t in TOPICS if t != "sports"])
    assert cos[unseen_sports].mean() > cos[others].mean()


def test_single_event_history_and_cold_start_give_unit_vectors(tiny_stack: TinyStack) -> None:
    data, encoder = tiny_stack.data, tiny_stack.encoder
    space = encoder.catalog_space(data.items, data.item_text)
    categories = data.items["category"].to_numpy(dtype=object)
    cold = ColdStart({"new": ["travel"]}, categories, data.item_popularity(), 0.7)
    store = HistoryStore.from_sequences({"one": [0]}, hours=0.0)
    vecs, windows = user_vectors_at(
        encoder, store, ["one", "new", "nobody"], np.full(3, 1.0), space.vecs, cold
    )
    assert windows.lengths.tolist() == [1, 0, 0]
    assert torch.allclose(vecs.norm(dim=1), torch.ones(3), atol=1e-5)
    # the declared-interest user leans to travel items more than the user with nothing declared
    travel = torch.as_tensor(np.flatnonzero(categories == "travel"))
    assert (space.vecs[travel] @ vecs[1]).mean() > (space.vecs[travel] @ vecs[2]).mean()


def test_history_window_is_strictly_before_the_query_time() -> None:
    hist = pd.DataFrame(
        {
            "user_id": ["u"] * 3,
            "item_id": ["a", "b", "c"],
            "event_ts": pd.to_datetime(["2026-10-01 10:00", "2026-10-01 11:00", "2026-10-01 12:00"]),
            "seq": [1, 2, 3],
            "dwell_seconds": [5.0, 6.0, 7.0],
            "rating": [np.nan, 4.0, np.nan],
        }
    )
    store = HistoryStore.from_frame(hist, {"a": 0, "b": 1, "c": 2})
    at_11 = to_hours(pd.Series(pd.to_datetime(["2026-10-01 11:00"])))
    starts, ends = store.ends_before(np.array(["u"]), at_11)
    window = store.windows(starts, ends, 4)
    # only a (10:00) is strictly before 11:00; left-padded so the latest event sits in the last column
    assert window.items.tolist() == [[-1, -1, -1, 0]]
    assert isinstance(window.trimmed(), HistoryWindows) and window.trimmed().items.tolist() == [[0]]


def test_recency_buckets_grow_logarithmically() -> None:
    # 0 h -> 0, 1 h -> log2(2) = 1, 3 h -> log2(4) = 2, a year -> capped at 15
    assert recency_buckets(np.array([0.0, 1.0, 3.0, 24 * 365.0])).tolist() == [0, 1, 2, 13]
    assert recency_buckets(np.array([1e9])).tolist() == [15]


def test_save_and_load_round_trip(tiny_stack: TinyStack, tmp_path: Path) -> None:
    tiny_stack.encoder.save(tmp_path)
    loaded = TwoTowerRetriever.load(tmp_path)
    data = tiny_stack.data
    a = tiny_stack.encoder.catalog_space(data.items, data.item_text)
    b = loaded.catalog_space(data.items, data.item_text)
    assert (
        torch.allclose(a.vecs, b.vecs)
        and torch.allclose(a.bias, b.bias)
        and a.scale == pytest.approx(b.scale)
    )


def _history(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(len(rows))],
            "event_ts": pd.to_datetime([r[0] for r in rows]),
            "category": [r[1] for r in rows],
            "tags": [r[2] for r in rows],
            "dwell_seconds": [r[3] for r in rows],
            "rating": np.nan,
            "title": [
                f"{r[1]} headline about quantum telescopes" if r[1] == "science" else "Big match recap"
                for r in rows
            ],
            "body": "Details follow.",
        }
    )


def test_interest_profile_weights_recency_and_dwell() -> None:
    hist = _history(
        [
            ("2026-09-01", "sports", "football", 10.0),  # old: a month of 7-day half-lives ago
            ("2026-09-01", "sports", "football", 10.0),
            ("2026-10-01", "science", "space", 120.0),  # recent and read for long
        ]
    )
    profile = build_interest_profile("u", hist, {"preferred_style": "formal"}, top_k=3)
    cats = dict(profile.top_categories)
    # two old sports reads weigh 2 * 0.5**(30/7) * (1 + log1p(10)/4) ~ 0.16; the recent science read
    # weighs 1 * (1 + log1p(120)/4) ~ 2.2, so science leads despite fewer events
    assert profile.top_categories[0][0] == "science"
    assert sum(cats.values()) == pytest.approx(1.0, abs=1e-3)
    assert profile.preferred_style == "formal" and profile.n_events == 3 and not profile.cold_start
    assert profile.top_tags[0][0] == "space"
    assert "quantum" in [k for k, _ in profile.keywords]


def test_cold_start_profile_uses_declared_interests() -> None:
    empty = _history([]).iloc[0:0]
    profile = build_interest_profile(
        "new", empty, {"declared_interests": "travel|science", "preferred_style": None}
    )
    assert profile.cold_start and profile.n_events == 0
    assert [c for c, _ in profile.top_categories] == ["travel", "science"]
    assert profile.preferred_style == "concise"  # the default when the user row has none


def test_profiles_for_all_users_follow_their_clicks(rec_data: RecData) -> None:
    profiles = build_interest_profiles(rec_data)
    assert set(profiles) == set(rec_data.users["user_id"])
    # in the synthetic world each user clicks mostly their own topic: the top category should be the topic of
    # most of their clicks for nearly every user with history
    idx = rec_data.history_idx()
    agree = []
    for user, items in idx.items():
        top = rec_data.items["category"].to_numpy()[items]
        values, counts = np.unique(top, return_counts=True)
        agree.append(profiles[user].top_categories[0][0] in set(values[counts == counts.max()]))
    assert np.mean(agree) > 0.8


def test_idf_downweights_common_words(rec_data: RecData) -> None:
    idf = compute_idf(rec_data.items)
    # "sports" ends the body of every sports item: 20 of the 80 -> log((1 + 80) / (1 + 20)) + 1
    assert idf["sports"] == pytest.approx(np.log(81 / 21) + 1)
    # stopwords ("about", "more", "news") never become keywords
    assert not {"about", "more", "news"} & set(idf)
    rare = min(idf, key=lambda t: -idf[t])
    assert idf[rare] > idf["sports"]


def test_sequence_windows_score_every_target_once_with_context() -> None:
    # users with 1, 2, 5 and 23 events; windows of 6 inputs: the 23-event user needs several
    lengths = {"a": 1, "b": 2, "c": 5, "d": 23}
    store = HistoryStore.from_sequences({u: list(range(n)) for u, n in lengths.items()}, hours=0.0)
    windows = sequence_windows(store, 6)
    scored = _scored_targets(windows)
    expected = np.concatenate([np.arange(s + 1, e) for s, e in store.offsets.values()])
    assert sorted(scored.tolist()) == expected.tolist()  # every event after a user's first, once
    assert windows.n_targets == len(expected)
    assert (windows.lengths <= 6).all()
    # each scored target sees at least 6 // 2 earlier events, or all of its user's earlier events
    for start, end, first in zip(windows.starts, windows.ends, windows.loss_from, strict=True):
        window_start = max(start, end - 6)
        assert first - window_start >= min(3, first - start)


def test_one_causal_pass_equals_encoding_each_prefix(tiny_stack: TinyStack) -> None:
    data, encoder = tiny_stack.data, tiny_stack.encoder
    store = HistoryStore.from_frame(data.as_of(data.split_start("valid")).histories, data.item_index)
    windows = sequence_windows(store, encoder.cfg.max_history)
    # users whose whole history fits one window (their training pass covers every prefix)
    rows = np.flatnonzero(windows.loss_from == windows.starts + 1)[:4]
    catalog = encoder.catalog_features(data.items, data.item_text)
    batch = sequence_batch(store, windows, rows, catalog, None)
    model = encoder.model.eval()
    with torch.no_grad():
        vecs, _ = model.encode_items(batch.text, batch.id_idx, batch.cat_idx)
        padded = torch.cat([vecs, torch.zeros(1, vecs.shape[1])])
        length = batch.mask.shape[1]
        causal = model.users(
            padded[batch.hist_pos], batch.signals, batch.hours, batch.mask,
            torch.arange(length), batch.query_hours,
        )  # fmt: skip
    space = encoder.catalog_space(data.items, data.item_text)
    checked = 0
    for b, r in enumerate(rows):
        start, end = windows.starts[r], windows.ends[r]
        for target in range(start + 1, end + 1):
            # the prefix before ``target``, encoded on its own as at inference, read at the target's time
            prefix = store.windows(np.array([start]), np.array([target]), encoder.cfg.max_history)
            alone = encoder.user_vectors(prefix, store.hours[[target]], space.vecs)[0]
            col = length - 1 - (end - target)
            assert torch.allclose(F.normalize(causal[b, col], dim=-1), alone, atol=1e-4)
            checked += 1
    assert checked >= 8


def test_sampled_softmax_with_log_q_trains_too(rec_data: RecData) -> None:
    # full_softmax_max_items=0: every step scores the batch's targets and uniform draws, log-Q corrected
    settings = tiny_settings(
        profile={"epochs": 4, "hidden_dim": 32, "n_heads": 2, "batch_size": 16, "max_history": 20,
                 "full_softmax_max_items": 0, "random_negatives": 16},
    )  # fmt: skip
    encoder, log = train_profile_model(rec_data, settings)
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert evaluate_retrieval(encoder, rec_data, "valid")["recall@20"] > 0.4
    # the correction is log of each candidate's expected count: targets by their share, draws 1/n each
    store = HistoryStore.from_frame(
        rec_data.as_of(rec_data.split_start("valid")).histories, rec_data.item_index
    )
    windows = sequence_windows(store, 20)
    share = np.bincount(store.items[_scored_targets(windows)], minlength=rec_data.n_items)
    share = share / share.sum()
    catalog = encoder.catalog_features(rec_data.items, rec_data.item_text)
    batch = sequence_batch(
        store, windows, np.arange(4), catalog, (share, 16, torch.Generator().manual_seed(0))
    )
    n_scored = int(batch.scored.sum())
    cand = batch.id_idx[batch.cand_pos].numpy() - 1  # vocabulary slot - 1 = catalog position here
    assert np.allclose(batch.log_q.numpy(), np.log(n_scored * share[cand] + 16 / rec_data.n_items), atol=1e-5)
