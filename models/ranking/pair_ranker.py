"""Deep ranker over (user, candidate) pairs with target attention over the history.

Inputs of one pair:
- the candidate: its (frozen) profile-model item vector, a learned id embedding, category and creator group;
- the user's history before the pair's time (the same window the profile model reads) with engagement signals,
  pooled by DIN-style target attention (Zhou et al., 2018): weights from an MLP over [h, c, h*c, h-c];
- cross features: candidate x pooled-history product and dot, the two-tower score, the share of history items
  in the candidate's category;
- the point-in-time counts of ``marts.training_samples`` (user/item impressions, clicks, CTR, item age) and the
  user's group and region.

Labels are clicks; a click's loss weight grows with its dwell time (a long read is a surer positive).

Position debiasing: clicks depend on the slot an item was shown in, not only on relevance. During training a
shallow position tower (one learned scalar per position) is added to the logit, so the position effect is
explained there and not absorbed into the relevance features (the "shallow tower" of Zhao et al., 2019,
"Recommending what video to watch next"). At inference the tower is dropped: every candidate is scored as if
shown in the same slot, which is the relevance ranking we want."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models import metrics
from models.history import length_batches
from models.progress import EpochProgress
from models.ranking.pair_features import (
    DENSE_FEATURES,
    MAX_POSITION,
    PairInputs,
    build_pair_inputs,
    pair_context,
    ranker_vocabulary,
    samples_to_pairs,
    with_unexposed_negatives,
)
from models.recdata import RecData
from models.retrieval.two_tower import TwoTowerRetriever, history_signals
from models.settings import RankerSettings, Settings
from models.torch_utils import (
    EarlyStopping,
    autocast,
    grad_scaler,
    load_weights,
    read_config,
    save_weights,
    seed_everything,
)

log = logging.getLogger(__name__)


class DeepRanker(nn.Module):
    """Target attention + cross features + MLP; a position tower that only training uses."""

    def __init__(
        self, n_items: int, n_categories: int, n_creator_groups: int, n_user_groups: int, n_regions: int,
        profile_dim: int, cfg: RankerSettings,
    ) -> None:  # fmt: skip
        super().__init__()
        d = cfg.hidden_dim
        self.item_proj = nn.Linear(profile_dim, d)
        self.id_emb = nn.Embedding(n_items + 2, d, padding_idx=0)  # 0 = unknown, last = history padding
        self.cat_emb = nn.Embedding(n_categories + 1, d)
        self.creator_emb = nn.Embedding(n_creator_groups + 1, d)
        self.signal_proj = nn.Linear(3, d)
        self.attention = nn.Sequential(nn.Linear(4 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.user_group_emb = nn.Embedding(n_user_groups + 1, 8)
        self.region_emb = nn.Embedding(n_regions + 1, 8)
        # fixed standardization from the training pairs (set by train_ranker, saved with the weights): batch
        # statistics would differ between length-bucketed training batches and inference
        self.register_buffer("dense_mean", torch.zeros(len(DENSE_FEATURES)))
        self.register_buffer("dense_std", torch.ones(len(DENSE_FEATURES)))
        in_dim = 3 * d + 1 + profile_dim + len(DENSE_FEATURES) + 16
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, 2 * d),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * d, d),
            nn.GELU(),
            nn.Linear(d, 1),
        )
        self.position_tower = nn.Embedding(MAX_POSITION + 1, 1)
        nn.init.zeros_(self.position_tower.weight)
        nn.init.normal_(self.id_emb.weight, std=0.02)

    def item_repr(
        self, profile_vec: torch.Tensor, id_slot: torch.Tensor, cat: torch.Tensor, creator: torch.Tensor
    ) -> torch.Tensor:
        return (
            self.item_proj(profile_vec) + self.id_emb(id_slot) + self.cat_emb(cat) + self.creator_emb(creator)
        )

    def forward(
        self, cand: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor, signals: torch.Tensor,
        user_vec: torch.Tensor, dense: torch.Tensor, user_cats: torch.Tensor, position: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        """Logits for pairs; ``cand`` (B, d) and ``hist`` (B, L, d) are item representations."""
        h = hist + self.signal_proj(signals)
        c = cand.unsqueeze(1).expand_as(h)
        att = self.attention(torch.cat([h, c, h * c, h - c], dim=-1)).squeeze(-1)
        att = att.masked_fill(~hist_mask, float("-inf"))
        weights = torch.softmax(att, dim=1)
        weights = torch.nan_to_num(weights, nan=0.0)  # an empty history pools to zeros
        pooled = (weights.unsqueeze(-1) * h).sum(1)
        x = torch.cat(
            [
                cand,
                pooled,
                cand * pooled,
                (cand * pooled).sum(-1, keepdim=True) / math.sqrt(cand.shape[-1]),
                user_vec,
                (dense - self.dense_mean) / self.dense_std,
                self.user_group_emb(user_cats[:, 0]),
                self.region_emb(user_cats[:, 1]),
            ],
            dim=-1,
        )
        logit = self.mlp(x).squeeze(-1)
        if position is not None:
            logit = logit + self.position_tower(position.clamp(0, MAX_POSITION)).squeeze(-1)
        return logit


class Ranker:
    """A trained :class:`DeepRanker` with its vocabularies; scores pairs built by :func:`build_pair_inputs`."""

    def __init__(
        self,
        model: DeepRanker,
        vocab: dict[str, list[str]],
        cfg: RankerSettings,
        profile_dim: int,
        device: str = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.slots = {name: {v: i + 1 for i, v in enumerate(values)} for name, values in vocab.items()}
        self.cfg = cfg
        self.profile_dim = profile_dim
        self.device = device
        self._catalog: dict[str, torch.Tensor] | None = None

    def slot(self, name: str, values: Any) -> np.ndarray:
        """Vocabulary slots of ``values`` (0 = unseen)."""
        table = self.slots[name]
        return np.asarray([table.get(v, 0) for v in values], dtype=np.int64)

    def set_catalog(self, items: pd.DataFrame, profile_item_vecs: torch.Tensor) -> None:
        """Fix the catalog the pairs' item positions refer to (ids/categories unseen in training map to 0)."""
        pad = len(self.vocab["item"]) + 1
        self._catalog = {
            "vec": torch.cat(
                [
                    profile_item_vecs.to(self.device),
                    torch.zeros(1, profile_item_vecs.shape[1], device=self.device),
                ]
            ),
            "id": torch.as_tensor(np.append(self.slot("item", items["item_id"]), pad), device=self.device),
            "cat": torch.as_tensor(
                np.append(self.slot("category", items["category"]), 0), device=self.device
            ),
            "creator": torch.as_tensor(
                np.append(self.slot("creator_group", items["creator_group"]), 0), device=self.device
            ),
        }

    def _item_repr(self, positions: torch.Tensor) -> torch.Tensor:
        cat = self._catalog
        assert cat is not None, "call set_catalog first"
        return self.model.item_repr(
            cat["vec"][positions], cat["id"][positions], cat["cat"][positions], cat["creator"][positions]
        )

    def _logits(self, batch: PairInputs, with_position: bool) -> torch.Tensor:
        assert self._catalog is not None, "call set_catalog first"
        pad = len(self._catalog["vec"]) - 1
        dev = self.device
        batch = replace(batch, windows=batch.windows.trimmed())
        hist_pos = np.where(batch.windows.mask, batch.windows.items, pad)
        # represent each distinct item once, then gather: a batch repeats the same few items many times over
        needed, inverse = np.unique(np.concatenate([batch.candidate, hist_pos.ravel()]), return_inverse=True)
        cand_rows = torch.as_tensor(inverse[: len(batch.candidate)], device=dev)
        hist_rows = torch.as_tensor(inverse[len(batch.candidate) :].reshape(hist_pos.shape), device=dev)
        with autocast(dev):
            reprs = self._item_repr(torch.as_tensor(needed, device=dev))
            logits = self.model(
                reprs[cand_rows],
                reprs[hist_rows],
                torch.as_tensor(batch.windows.mask, device=dev),
                torch.as_tensor(history_signals(batch.windows), device=dev),
                batch.user_vec.to(dev),
                torch.as_tensor(batch.dense, dtype=torch.float32, device=dev),
                torch.as_tensor(np.stack([batch.user_group, batch.region], axis=1), device=dev),
                torch.as_tensor(batch.position, device=dev) if with_position else None,
            )
        return logits.float()

    @torch.inference_mode()
    def score(self, pairs: PairInputs, batch_size: int = 4096) -> np.ndarray:
        """Relevance logits without the position tower (inference)."""
        if self.model.training:  # eval() walks every submodule: a per-request cost when already in eval mode
            self.model.eval()
        out = np.zeros(len(pairs), dtype=np.float32)
        for rows in length_batches(pairs.windows.lengths, batch_size):
            out[rows] = self._logits(pairs.take(rows), False).cpu().numpy()
        return out

    def save(self, path: Path) -> None:
        """Write weights (state_dict), config, vocabularies and the feature schema into ``path``."""
        config = {"settings": self.cfg.model_dump(), "vocab": self.vocab, "profile_dim": self.profile_dim}
        save_weights(path, "ranker", self.model, config)

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Ranker:
        """Load what :meth:`save` wrote."""
        config = read_config(path, "ranker")
        cfg = RankerSettings(**config["settings"])
        model = load_weights(_new_model(config["vocab"], config["profile_dim"], cfg), path, "ranker", device)
        return cls(model, config["vocab"], cfg, config["profile_dim"], device)


def _new_model(vocab: Mapping[str, list[str]], profile_dim: int, cfg: RankerSettings) -> DeepRanker:
    return DeepRanker(
        len(vocab["item"]), len(vocab["category"]), len(vocab["creator_group"]), len(vocab["user_group"]),
        len(vocab["region"]), profile_dim, cfg,
    )  # fmt: skip


def grouped_ndcg(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups (requests) that contain at least one positive, ranking each group by score.

    The same figure as ``metrics.ndcg_at_k`` per group (descending score, ties in row order, binary gains,
    log2 discounts) computed for all groups at once: one sort by (group, -score, row).
    """
    codes, _ = pd.factorize(np.asarray(groups, dtype=object))
    if not len(codes):
        return float("nan")
    y = np.asarray(labels, dtype=np.float64)
    order = np.lexsort((np.arange(len(codes)), -np.asarray(scores, dtype=np.float64), codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    hit = (y[order] > 0) & (rank < k)
    n_groups = int(codes.max()) + 1
    dcg = np.bincount(sorted_codes[hit], weights=1.0 / np.log2(rank[hit] + 2.0), minlength=n_groups)
    n_relevant = np.bincount(codes, weights=(y > 0).astype(np.float64), minlength=n_groups).astype(np.int64)
    ideal = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))][np.minimum(n_relevant, k)]
    scored = np.bincount(codes, weights=y, minlength=n_groups) > 0
    return metrics.mean_defined((dcg[scored] / ideal[scored]).tolist())


def train_ranker(
    data: RecData, settings: Settings, encoder: TwoTowerRetriever
) -> tuple[Ranker, pd.DataFrame]:
    """Fit on train samples; early-stop on valid NDCG@10 over ``ranking_groups`` (AUC logged); keep the best epoch."""
    cfg = settings.ranker
    device = settings.resolved_device
    seed_everything(settings.seed + 1)
    vocab = ranker_vocabulary(data)
    model = _new_model(vocab, encoder.dim, cfg).to(device)
    ranker = Ranker(model, vocab, cfg, encoder.dim, device)
    # popularity for cold-start user vectors: engagements before the valid split only
    popularity = data.as_of(data.split_start("valid")).item_popularity()
    ctx = pair_context(data, encoder, settings.profile.cold_start_interest_weight, popularity)
    ranker.set_catalog(data.items, ctx.space.vecs)
    pairs = samples_to_pairs(data.samples, data.item_index)
    extra = settings.split.negatives_per_positive
    train_pairs, _ = with_unexposed_negatives(
        pairs[pairs["split"] == "train"].reset_index(drop=True),
        data, extra, settings.seed + 2, data.split_end("train"),
    )  # fmt: skip
    valid_pairs, valid_groups = with_unexposed_negatives(
        pairs[pairs["split"] == "valid"].reset_index(drop=True),
        data, extra, settings.seed + 3, data.split_end("valid"),
    )  # fmt: skip
    train = build_pair_inputs(train_pairs, ctx, ranker)
    valid = build_pair_inputs(valid_pairs, ctx, ranker)
    model.dense_mean.copy_(torch.as_tensor(train.dense.mean(0)))
    model.dense_std.copy_(torch.as_tensor(train.dense.std(0) + 1e-6))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    scaler = grad_scaler(device)
    batch_rng = np.random.default_rng(settings.seed + 1)
    rows: list[dict[str, Any]] = []
    stopping = EarlyStopping(cfg.patience)
    use_position = cfg.position_debias
    progress = EpochProgress("ranker", total=cfg.epochs, log=log).__enter__()
    for epoch in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        losses = []
        for batch_rows in length_batches(train.windows.lengths, cfg.batch_size, batch_rng):
            batch = train.take(batch_rows)
            logits = ranker._logits(batch, with_position=use_position)
            label = torch.as_tensor(batch.label, device=device)
            weight = torch.as_tensor(batch.weight, device=device)
            loss = (
                F.binary_cross_entropy_with_logits(logits, label, reduction="none") * weight
            ).sum() / weight.sum()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
        elapsed = time.perf_counter() - t0
        valid_scores = ranker.score(valid)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "valid_auc": metrics.auc(valid.label, valid_scores),
            "valid_ndcg@10": grouped_ndcg(valid_groups, valid.label, valid_scores),
            "samples_per_s": len(train) / elapsed if elapsed > 0 else float("nan"),
        }
        rows.append(row)
        progress.step(loss=row["train_loss"], valid_ndcg10=row["valid_ndcg@10"], valid_auc=row["valid_auc"])
        score = row["valid_ndcg@10"] if not math.isnan(row["valid_ndcg@10"]) else -row["train_loss"]
        if stopping.step(score, model):
            progress.finish(f"early stop: no valid gain for {cfg.patience} epochs")
            break
    progress.finish()
    stopping.restore(model)
    model.eval()
    return ranker, pd.DataFrame(rows)
