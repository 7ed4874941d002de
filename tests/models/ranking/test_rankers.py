"""The deep ranker: it learns on the synthetic world, ignores position at inference, and MMR re-ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models import metrics
from models.ranking.pair_features import build_pair_inputs, pair_context, samples_to_pairs
from models.ranking.pair_ranker import Ranker
from models.ranking.rerank import mmr_rerank
from models.ranking.stack_features import (
    NEWCOMER_HALF_LIFE_DAYS,
    StackExamples,
    newcomer_share,
    stack_feature_names,
)
from models.ranking.stacked_ranker import ListwiseRanker, StackedRanker, listwise_loss
from models.recdata import RecData
from models.settings import RankerSettings
from tests.models.conftest import START, TinyStack, marts_from_events


def _test_pairs(stack: TinyStack):
    data = stack.data
    ctx = pair_context(data, stack.encoder, 0.7, data.item_popularity())
    stack.ranker.set_catalog(data.items, ctx.space.vecs)
    pairs = samples_to_pairs(data.samples[data.samples["split"] == "test"], data.item_index)
    return pairs, build_pair_inputs(pairs, ctx, stack.ranker)


def test_ranker_loss_falls_and_held_out_auc_is_high(tiny_stack: TinyStack) -> None:
    log = tiny_stack.ranker_log
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    _, inputs = _test_pairs(tiny_stack)
    auc = metrics.auc(inputs.label, tiny_stack.ranker.score(inputs))
    # In the synthetic world a user clicks an item of their own topic with p ~ 0.6 / (1 + 0.3 pos) and any other
    # item with p ~ 0.04: "candidate topic == the topic of the user's earlier clicks" alone separates most clicks
    # from non-clicks, so a ranker that reads the history (target attention, category-match share) gets an
    # AUC far above 0.6 on the unseen test days.
    assert auc > 0.6


def test_inference_score_ignores_position(tiny_stack: TinyStack) -> None:
    _, inputs = _test_pairs(tiny_stack)
    first = tiny_stack.ranker.score(inputs)
    inputs.position[:] = 7  # the position tower is training-only: a different slot changes nothing
    assert np.allclose(first, tiny_stack.ranker.score(inputs))


def test_position_tower_learns_the_examination_decay(tiny_stack: TinyStack) -> None:
    # the synthetic click probability falls with slot position (1 / (1 + 0.3 pos)): the tower should too
    bias = tiny_stack.ranker.model.position_tower.weight.detach()[:6, 0]
    assert bias[0] > bias[5]


def test_save_and_load_round_trip(tiny_stack: TinyStack, tmp_path: Path) -> None:
    _, inputs = _test_pairs(tiny_stack)
    tiny_stack.ranker.save(tmp_path)
    loaded = Ranker.load(tmp_path)
    data = tiny_stack.data
    loaded.set_catalog(data.items, tiny_stack.encoder.catalog_space(data.items, data.item_text).vecs)
    assert np.allclose(tiny_stack.ranker.score(inputs), loaded.score(inputs), atol=1e-5)


def test_mmr_with_lambda_one_keeps_the_relevance_order() -> None:
    cands = np.array([10, 11, 12, 13])
    rel = np.array([0.1, 0.9, 0.5, 0.7])
    emb = np.eye(14, dtype=np.float32)
    assert mmr_rerank(cands, rel, emb, 3, 1.0).tolist() == [11, 13, 12]


def test_mmr_trades_relevance_for_diversity() -> None:
    # items 0 and 1 are duplicates (same embedding), item 2 is different and a bit less relevant
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    cands = np.array([0, 1, 2])
    rel = np.array([1.0, 0.95, 0.8])
    # lambda = 0.5: after 0, item 1 gains 0.5 * 0.75 - 0.5 * 1 < 0 while item 2 gains 0.5 * 0 - 0 = 0 -> 2 next
    # (relevance is min-max scaled first: 1.0 -> 1, 0.95 -> 0.75, 0.8 -> 0)
    assert mmr_rerank(cands, rel, emb, 2, 0.5).tolist() == [0, 2]
    assert mmr_rerank(cands, rel, emb, 2, 1.0).tolist() == [0, 1]


def test_newcomer_share_counts_only_engagements_from_a_users_first_day_weighted_by_recency() -> None:
    # veterans v0..v2 start on day 0 and engage with item 0 on day 9; newcomer n0 arrives on day 9 and engages
    # with item 1 (and item 2 the next day, after its first day); newcomer n1 arrived on day 2 with item 3
    day = lambda d, h=12: START + pd.Timedelta(days=d, hours=h)  # noqa: E731
    events = [(f"v{u}", 4, day(0)) for u in range(3)] + [(f"v{u}", 0, day(9)) for u in range(3)]
    events += [("n0", 1, day(9)), ("n0", 2, day(10, 13)), ("n1", 3, day(2))]
    inter = pd.DataFrame(
        [(f"r{k}", u, f"i{i}", ts, 0, 1, 30.0) for k, (u, i, ts) in enumerate(events)],
        columns=["request_id", "user_id", "item_id", "event_ts", "position", "clicked", "dwell_seconds"],
    )
    users = pd.DataFrame({"user_id": ["v0", "v1", "v2", "n0", "n1"], "user_group": "a", "region": "r",
                          "preferred_style": None, "declared_interests": None})  # fmt: skip
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(5)], "title": "t", "body": "b", "category": "c",
                          "tags": "", "creator_id": "c", "creator_group": "large",
                          "published_at": START - pd.Timedelta(days=1)})  # fmt: skip
    data = RecData.from_frames(*marts_from_events(inter, users, items, np.eye(5), 14, 2, 2))
    share = newcomer_share(data.as_of(START + pd.Timedelta(days=11)))
    # item 1 (a newcomer's first day, 2 days ago) > item 3 (a newcomer's first day, 9 days ago) > item 0
    # (three veterans, 2 days ago), which no newcomer engaged with, like item 2 (n0 after its first day)
    assert share[1] > share[3] > share[0]
    assert share[0] == share[2]
    # day-0 engagements are every veteran's first day: item 4 counts three of them, 11 days old
    assert share[4] > share[0]
    # the weights behind the shares (share - floor): ages 1.5 and 8.5 days, half-life 7 days -> a ratio of 2
    weight = np.exp(share) - np.exp(share[0])
    assert np.isclose(weight[1] / weight[3], 0.5 ** ((1.5 - 8.5) / NEWCOMER_HALF_LIFE_DAYS))


def test_a_stacked_ranker_saved_before_a_feature_was_added_reads_its_own_columns(tmp_path: Path) -> None:
    sources = ["ease", "fresh"]
    built = stack_feature_names(sources)
    old = [f for f in built if f != "log_newcomer_share"]  # the features of a ranker saved before it existed
    cfg = RankerSettings(hidden_dim=16)
    rng = np.random.default_rng(0)
    item_text = rng.normal(size=(10, 8)).astype(np.float32)
    torch.manual_seed(0)
    StackedRanker(ListwiseRanker(len(old), 8, cfg), sources, cfg, item_text, features=old).save(tmp_path)
    loaded = StackedRanker.load(tmp_path, item_text)
    assert loaded.feature_names == old
    items = np.tile(np.arange(5), (3, 1))
    dense = rng.normal(size=(3, 5, len(built))).astype(np.float32)
    history = np.full((3, 4), -1)
    history[:, -2:] = [7, 8]
    examples = StackExamples(["a", "b", "c"], items, np.ones((3, 5), bool), dense, history, np.zeros((3, 5)))
    scores = loaded.score(examples)
    # the same as the old model on the examples without the new column
    keep = [built.index(f) for f in old]
    with torch.inference_mode():
        text = torch.as_tensor(item_text / np.linalg.norm(item_text, axis=1, keepdims=True))
        expected = loaded.model(
            torch.as_tensor(dense[..., keep]),
            text[items],
            text[history.clip(0)],
            torch.as_tensor(history >= 0),
        )
    assert np.allclose(scores, expected.numpy(), atol=1e-5)
    # and a changed column would change the scores: the new column is really left out, not read
    shifted = StackExamples(
        ["a", "b", "c"], items, np.ones((3, 5), bool), dense.copy(), history, np.zeros((3, 5))
    )
    shifted.dense[..., built.index("log_newcomer_share")] += 5.0
    assert np.allclose(loaded.score(shifted), scores)
    shifted.dense[..., keep[0]] += 5.0
    assert not np.allclose(loaded.score(shifted), scores)


def test_listwise_loss_weights_lists_and_skips_those_without_a_positive() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # the third list has none
    log_p = torch.log_softmax(logits, dim=1)
    # ListNet: the positives share the target mass, so list 0's loss is -(log p0 + log p1) / 2
    per_list = torch.stack([-(log_p[0, 0] + log_p[0, 1]) / 2, -log_p[1, 1]])
    assert torch.isclose(listwise_loss(logits, labels), per_list.mean())
    weighted = listwise_loss(logits, labels, torch.tensor([3.0, 1.0, 100.0]))
    assert torch.isclose(weighted, (3 * per_list[0] + per_list[1]) / 4)  # list 2's weight never counts
