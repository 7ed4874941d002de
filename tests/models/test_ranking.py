"""The deep ranker: it learns on the synthetic world, ignores position at inference, and MMR re-ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models import metrics
from models.ranking import Ranker, build_pair_inputs, mmr_rerank, pair_context, samples_to_pairs
from tests.models.conftest import TinyStack


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
