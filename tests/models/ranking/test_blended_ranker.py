"""The blended stacked ranker: within-list standardization, the weighted sum, persistence of both members."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.ranking.blended_ranker import BlendedStackedRanker, load_stacked_ranker, standardize_within_lists
from models.ranking.gbdt_ranker import train_gbdt_ranker
from models.ranking.stack_features import StackExamples, stack_feature_names
from models.ranking.stacked_ranker import ListwiseRanker, StackedRanker
from models.settings import RankerSettings

SOURCES = ["ease", "fresh"]


class Fixed:
    """A member whose scores are given (to check the blend's arithmetic)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores
        self.feature_names = stack_feature_names(SOURCES)

    def set_catalog(self, item_text: np.ndarray) -> None:
        pass

    def score(self, examples: StackExamples, batch_size: int = 0) -> np.ndarray:
        return np.where(examples.mask, self.scores, -np.inf)

    def save(self, path: Path) -> None:
        raise NotImplementedError


def _examples(n_users: int = 40, width: int = 12, seed: int = 0) -> StackExamples:
    """Lists whose labels follow the first dense feature (so a trained ranker has something to learn)."""
    rng = np.random.default_rng(seed)
    n_feat = len(stack_feature_names(SOURCES))
    dense = rng.normal(size=(n_users, width, n_feat)).astype(np.float32)
    mask = np.ones((n_users, width), bool)
    mask[::3, -3:] = False  # some shorter lists
    labels = ((dense[..., 0] > 0.8) & mask).astype(np.float32)
    items = np.tile(np.arange(width), (n_users, 1))
    history = np.full((n_users, 4), -1)
    history[::2, -2:] = [width, width + 1]
    return StackExamples([f"u{i}" for i in range(n_users)], items, mask, dense, history, labels)


def test_standardize_within_lists_z_scores_each_list_over_its_real_candidates() -> None:
    scores = np.array([[1.0, 2.0, 3.0, 99.0], [5.0, 5.0, 5.0, 5.0]])
    mask = np.array([[True, True, True, False], [True, True, True, True]])
    z = standardize_within_lists(scores, mask)
    assert np.allclose(z[0, :3], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])  # population std of 1, 2, 3 is sqrt(2/3)
    assert z[0, 3] == 0.0  # padding does not move the list's mean or spread
    assert np.all(z[1] == 0.0)  # a constant list carries no order


def test_the_blend_is_the_weighted_sum_of_standardized_member_scores() -> None:
    ex = _examples(n_users=3, width=5)
    a = np.random.default_rng(1).normal(size=(3, 5)) * 100  # very different scales
    b = np.random.default_rng(2).normal(size=(3, 5)) * 0.01
    blend = BlendedStackedRanker([Fixed(a), Fixed(b)], [0.25, 0.75])
    got = blend.score(ex)
    expected = 0.25 * standardize_within_lists(a, ex.mask) + 0.75 * standardize_within_lists(b, ex.mask)
    assert np.allclose(got[ex.mask], expected[ex.mask], atol=1e-6)
    assert np.all(np.isneginf(got[~ex.mask]))
    # weight 1 on a member gives that member's order, whatever its scale
    only_a = BlendedStackedRanker([Fixed(a), Fixed(b)], [1.0, 0.0]).score(ex)
    for r in range(3):
        m = ex.mask[r]
        assert list(np.argsort(-only_a[r][m])) == list(np.argsort(-a[r][m]))


def test_a_blend_rejects_weights_that_do_not_match_its_members() -> None:
    with pytest.raises(ValueError, match="one weight per member"):
        BlendedStackedRanker([Fixed(np.zeros((1, 1)))], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        BlendedStackedRanker([Fixed(np.zeros((1, 1))), Fixed(np.zeros((1, 1)))], [-0.5, 1.5])


def test_a_saved_blend_of_torch_and_lightgbm_loads_and_scores_the_same(tmp_path: Path) -> None:
    train, valid = _examples(seed=0), _examples(seed=1)
    relevant = {u: set(valid.items[r][valid.labels[r] > 0].tolist()) for r, u in enumerate(valid.user_ids)}
    cfg = RankerSettings(hidden_dim=16, stack_gbdt_rounds=30, stack_gbdt_min_leaf=5)
    item_text = np.random.default_rng(3).normal(size=(14, 8)).astype(np.float32)
    torch.manual_seed(0)
    torch_member = StackedRanker(ListwiseRanker(train.dense.shape[-1], 8, cfg), SOURCES, cfg, item_text)
    trees, log_frame = train_gbdt_ranker(train, valid, relevant, SOURCES, cfg, seed=0)
    assert len(log_frame) == 3 and log_frame["valid_ndcg@10"].max() > 0
    blend = BlendedStackedRanker([torch_member, trees], [0.5, 0.5])
    blend.save(tmp_path / "ranker")
    loaded = load_stacked_ranker(tmp_path / "ranker", item_text)
    assert isinstance(loaded, BlendedStackedRanker)
    assert loaded.weights == [0.5, 0.5] and loaded.feature_names == stack_feature_names(SOURCES)
    assert np.allclose(loaded.score(valid), blend.score(valid), atol=1e-5)
    # each member loads as its own kind too
    assert isinstance(load_stacked_ranker(tmp_path / "ranker" / "member_0", item_text), StackedRanker)
    assert np.allclose(
        load_stacked_ranker(tmp_path / "ranker" / "member_1", item_text).score(valid), trees.score(valid)
    )


def test_the_lightgbm_log_times_each_block_of_rounds_not_the_running_total() -> None:
    """Each row's seconds are its own 10 rounds' training time (as the torch ranker's are one epoch's)."""
    train, valid = _examples(n_users=60, seed=0), _examples(seed=1)
    relevant = {u: set(valid.items[r][valid.labels[r] > 0].tolist()) for r, u in enumerate(valid.user_ids)}
    started = time.perf_counter()
    _, log_frame = train_gbdt_ranker(
        train, valid, relevant, SOURCES, RankerSettings(stack_gbdt_rounds=60, stack_gbdt_min_leaf=5), seed=0
    )
    wall = time.perf_counter() - started
    seconds = log_frame["seconds"].to_numpy()
    assert len(seconds) == 6 and np.isfinite(seconds).all() and (seconds > 0).all()
    # blocks add up to at most the whole call; a running total would add up to several times it
    assert seconds.sum() <= wall


@pytest.mark.parametrize("objective", ["lambdarank", "rank_xendcg"])
def test_the_lightgbm_objective_comes_from_the_settings(objective: str) -> None:
    train, valid = _examples(seed=0), _examples(seed=1)
    relevant = {u: set(valid.items[r][valid.labels[r] > 0].tolist()) for r, u in enumerate(valid.user_ids)}
    cfg = RankerSettings(stack_gbdt_rounds=20, stack_gbdt_min_leaf=5, stack_gbdt_objective=objective)
    trees, _ = train_gbdt_ranker(train, valid, relevant, SOURCES, cfg, seed=0)
    assert trees.booster.params["objective"] == objective
