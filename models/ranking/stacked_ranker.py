"""The stacked listwise ranker: a softmax over each user's multi-source candidates, trained by time-based stacking."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from models import metrics
from models.progress import EpochProgress
from models.ranking.stack_features import StackExamples, stack_feature_names
from models.settings import RankerSettings
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


class ListwiseRanker(nn.Module):
    """MLP over the candidate features plus target attention over the history's text vectors.

    The attention (DIN-style, Zhou et al., 2018) projects the candidate's and the history items' text
    embeddings into a learned space, pools the history with softmax(candidate . history) weights and feeds the
    pooled similarity and the strongest single match to the MLP beside the dense features.
    """

    def __init__(self, n_features: int, text_dim: int, cfg: RankerSettings) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.att_dim = max(8, d // 2)
        self.proj = nn.Linear(text_dim, self.att_dim, bias=False)
        self.register_buffer("dense_mean", torch.zeros(n_features))
        self.register_buffer("dense_std", torch.ones(n_features))
        self.mlp = nn.Sequential(
            nn.Linear(n_features + 2, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, d), nn.GELU(),
            nn.Linear(d, 1),
        )  # fmt: skip

    def forward(
        self, dense: torch.Tensor, cand_text: torch.Tensor, hist_text: torch.Tensor, hist_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, C) logits from dense (B, C, F), candidate text (B, C, T), history text (B, L, T) and its mask."""
        c = self.proj(cand_text)
        h = self.proj(hist_text)
        sim = torch.einsum("bcd,bld->bcl", c, h) / math.sqrt(self.att_dim)
        masked = sim.masked_fill(~hist_mask[:, None, :], float("-inf"))
        weights = torch.nan_to_num(torch.softmax(masked, dim=-1), nan=0.0)
        pooled = (weights * sim).sum(-1)
        best = torch.where(hist_mask.any(1)[:, None], masked.max(-1).values, torch.zeros_like(pooled))
        x = torch.cat(
            [(dense - self.dense_mean) / self.dense_std, pooled.unsqueeze(-1), best.unsqueeze(-1)], dim=-1
        )
        return self.mlp(x).squeeze(-1)


class StackedRanker:
    """A trained :class:`ListwiseRanker` with its feature schema and the catalog text it reads."""

    def __init__(
        self, model: ListwiseRanker, sources: list[str], cfg: RankerSettings, item_text: np.ndarray,
        device: str = "cpu", features: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.model = model.to(device).eval()
        self.sources = sources
        self.cfg = cfg
        self.device = device
        built = stack_feature_names(sources)
        self._features = list(features) if features is not None else built
        missing = [f for f in self._features if f not in built]
        if missing:
            raise ValueError(f"the stacked ranker reads features this code does not build: {missing}")
        # a ranker saved before a feature was added reads its own columns of the examples (by name)
        self._columns = (
            None if self._features == built else np.asarray([built.index(f) for f in self._features])
        )
        self.set_catalog(item_text)

    @property
    def feature_names(self) -> list[str]:
        return self._features

    def set_catalog(self, item_text: np.ndarray) -> None:
        """The catalog's text embeddings (unit vectors) plus a zero row for padding."""
        text = np.asarray(item_text, dtype=np.float32)
        text = text / np.clip(np.linalg.norm(text, axis=1, keepdims=True), 1e-12, None)
        self._text = torch.as_tensor(np.vstack([text, np.zeros((1, text.shape[1]), np.float32)])).to(
            self.device
        )

    def _logits(self, batch: StackExamples) -> torch.Tensor:
        pad = len(self._text) - 1
        dev = self.device
        cand = torch.as_tensor(np.where(batch.mask, batch.items, pad), device=dev)
        hist_mask = batch.history >= 0
        hist = torch.as_tensor(np.where(hist_mask, batch.history, pad), device=dev)
        dense = batch.dense if self._columns is None else batch.dense[..., self._columns]
        with autocast(dev):
            logits = self.model(
                torch.as_tensor(dense, device=dev), self._text[cand], self._text[hist],
                torch.as_tensor(hist_mask, device=dev),
            )  # fmt: skip
        return logits.float().masked_fill(~torch.as_tensor(batch.mask, device=dev), float("-inf"))

    @torch.inference_mode()
    def score(self, examples: StackExamples, batch_size: int = 128) -> np.ndarray:
        """(users, width) relevance logits, -inf on padding."""
        self.model.eval()
        out = np.full(examples.items.shape, -np.inf, dtype=np.float32)
        for s in range(0, len(examples), batch_size):
            rows = np.arange(s, min(s + batch_size, len(examples)))
            out[rows] = self._logits(examples.take(rows)).cpu().numpy()
        return out

    def save(self, path: Path) -> None:
        """Write weights, config and the feature schema into ``path``."""
        config = {
            "settings": self.cfg.model_dump(),
            "sources": self.sources,
            "features": self.feature_names,
            "text_dim": int(self._text.shape[1]),
        }
        save_weights(path, "ranker", self.model, config)

    @classmethod
    def load(cls, path: Path, item_text: np.ndarray, device: str = "cpu") -> StackedRanker:
        """Load what :meth:`save` wrote (``item_text``: the catalog it will score)."""
        config = read_config(path, "ranker")
        cfg = RankerSettings(**config["settings"])
        model = ListwiseRanker(len(config["features"]), config["text_dim"], cfg)
        load_weights(model, path, "ranker", device)
        return cls(model, config["sources"], cfg, item_text, device, features=config["features"])


def listwise_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax cross-entropy over each user's candidates, the positives sharing the target mass (ListNet).

    ``weights`` (one per list) make the loss their weighted mean over the lists with a positive.
    """
    n_pos = labels.sum(1)
    keep = n_pos > 0
    log_p = torch.log_softmax(logits[keep], dim=1).clamp(min=-1e4)
    target = labels[keep] / n_pos[keep, None]
    per_list = -(target * log_p).sum(1)
    if weights is None:
        return per_list.mean()
    w = weights[keep]
    return (w * per_list).sum() / w.sum().clamp(min=1e-12)


def stacked_ndcg(
    ranker: StackedRanker, examples: StackExamples, relevant: Mapping[str, set[int]], k: int = 10
) -> float:
    """Mean full-ranking NDCG@k of the ranker's order (relevant items outside the candidates count as misses)."""
    scores = ranker.score(examples)
    values = []
    for r, user in enumerate(examples.user_ids):
        order = np.argsort(-scores[r], kind="stable")[: int(examples.mask[r].sum())]
        values.append(metrics.ndcg_at_k(examples.items[r][order].tolist(), relevant.get(user, set()), k))
    return metrics.mean_defined(values)


def train_stacked_ranker(
    train: StackExamples,
    valid: StackExamples | None,
    valid_relevant: Mapping[str, set[int]] | None,
    sources: list[str],
    item_text: np.ndarray,
    cfg: RankerSettings,
    device: str,
    seed: int,
    epochs: int | None = None,
) -> tuple[StackedRanker, pd.DataFrame]:
    """Fit the listwise ranker; with ``valid`` keep the epoch of best valid NDCG@10, else run ``epochs``."""
    seed_everything(seed)
    n_features = train.dense.shape[-1]
    model = ListwiseRanker(n_features, item_text.shape[1], cfg).to(device)
    flat = train.dense[train.mask]
    model.dense_mean.copy_(torch.as_tensor(flat.mean(0)))
    model.dense_std.copy_(torch.as_tensor(flat.std(0) + 1e-3))
    ranker = StackedRanker(model, sources, cfg, item_text, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.stack_learning_rate, weight_decay=1e-4)
    scaler = grad_scaler(device)
    rng = np.random.default_rng(seed)
    users_with_positives = np.flatnonzero(train.labels.sum(1) > 0)
    n_epochs = epochs or cfg.stack_epochs
    rows: list[dict[str, Any]] = []
    stopping = EarlyStopping(cfg.patience)
    with EpochProgress("stacked ranker", total=n_epochs, log=log) as progress:
        for epoch in range(n_epochs):
            model.train()
            t0 = time.perf_counter()
            losses = []
            order = rng.permutation(users_with_positives)
            for s in range(0, len(order), cfg.stack_batch_users):
                batch = train.take(order[s : s + cfg.stack_batch_users])
                cold = ~(batch.history >= 0).any(1)  # no history at the list's cutoff
                weights = torch.as_tensor(np.where(cold, cfg.stack_cold_weight, 1.0), device=device)
                loss = listwise_loss(
                    ranker._logits(batch), torch.as_tensor(batch.labels, device=device), weights.float()
                )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "seconds": time.perf_counter() - t0,
            }
            if valid is not None and valid_relevant is not None:
                row["valid_ndcg@10"] = stacked_ndcg(ranker, valid, valid_relevant)
            rows.append(row)
            progress.step(loss=row["train_loss"], valid_ndcg10=row.get("valid_ndcg@10", float("nan")))
            if valid is None:
                continue
            score = row["valid_ndcg@10"]
            if stopping.step(score, model):
                progress.finish(f"early stop: no valid gain for {cfg.patience} epochs")
                break
    stopping.restore(model)
    model.eval()
    return ranker, pd.DataFrame(rows)
