"""The two-tower retriever: a user's time-ordered history -> a vector in the item tower's space.

Two towers share one space. The item tower adds a projection of the frozen text embedding, a learned id
embedding (slot 0 = an item the model never saw, so new items fall back to text + category) and a category
embedding. The user tower turns the last ``max_history`` engaged items (item vector + dwell/rating signals) into
one vector with a one-layer causal transformer encoder whose attention is biased by how many events and how many
hours apart two events are, then pools them by attention towards the query time. Because no event's encoding
depends on when it is read, training is one causal pass per window with a next-item loss at every position (as
SASRec does) instead of one encoder pass per prefix; the pass equals encoding each prefix alone
(``tests/models/retrieval/test_two_tower.py``). The loss is an exact softmax over the catalog up to
``profile.full_softmax_max_items``, beyond that a sampled softmax over the step's targets plus uniformly drawn
catalog items (mixed negatives: in-batch negatives alone are all popular items, which leaves the long tail
unranked) with the log-Q correction (each candidate's logit minus the log of its expected count in the sample).
``models.retrieval.two_tower_ddp`` runs the same training under ``torchrun`` (DistributedDataParallel).

Users without history get :func:`cold_start_user_vectors`: the mean of the centroids of their declared
categories, blended with the popularity-weighted catalog centroid.

The readable side (category/tag weights and keywords from the history) is ``models.interests``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models import metrics
from models.history import HistoryStore, HistoryWindows, length_batches, to_hours
from models.progress import EpochProgress
from models.recdata import RecData, split_list
from models.retrieval.index import ItemSpace, mask_seen
from models.settings import ProfileSettings, Settings
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

N_RECENCY_BUCKETS = 16  # log2(1 + hours) buckets: 1 h ... ~4 years


def recency_buckets(age_hours: np.ndarray) -> np.ndarray:
    """Bucket ages by powers of two hours, so an hour and a day apart matter more than 30 vs 31 days."""
    return np.clip(np.floor(np.log2(1.0 + np.clip(age_hours, 0, None))), 0, N_RECENCY_BUCKETS - 1).astype(
        np.int64
    )


def history_signals(windows: HistoryWindows) -> np.ndarray:
    """Per-event engagement signals (batch, L, 3): log dwell, rating / 5, and whether a rating exists."""
    rating = np.nan_to_num(windows.rating, nan=0.0)
    has_rating = (~np.isnan(windows.rating) & windows.mask).astype(np.float32)
    return np.stack([np.log1p(np.clip(windows.dwell, 0, None)) / 5.0, rating / 5.0, has_rating], axis=-1)


class ItemTower(nn.Module):
    """Item vector = projected text + id embedding (0 = unknown item) + category embedding (0 = unknown)."""

    def __init__(
        self, n_items: int, n_categories: int, text_dim: int, dim: int, id_dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.id_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.cat_emb = nn.Embedding(n_categories + 1, dim, padding_idx=0)
        self.id_dropout = id_dropout
        nn.init.normal_(self.id_emb.weight, std=0.02)
        nn.init.normal_(self.cat_emb.weight, std=0.02)

    def forward(self, text: torch.Tensor, id_idx: torch.Tensor, cat_idx: torch.Tensor) -> torch.Tensor:
        if self.training and self.id_dropout > 0:
            # hide some ids while training so the text path alone stays good for items the model never saw
            id_idx = torch.where(torch.rand(id_idx.shape, device=id_idx.device) < self.id_dropout, 0, id_idx)
        return self.text_proj(text) + self.id_emb(id_idx) + self.cat_emb(cat_idx)


class BiasedEncoderLayer(nn.Module):
    """A pre-norm transformer encoder layer whose attention takes an additive per-head bias (batch, heads, L, L).

    Written out over ``F.scaled_dot_product_attention`` because ``nn.TransformerEncoderLayer``'s inference fast
    path returns NaN for a per-head float mask (torch 2.13, checked here), and the bias is what carries order
    and time gaps in this model.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (
            self.qkv(self.norm1(x))
            .view(batch, length, 3, self.n_heads, dim // self.n_heads)
            .permute(2, 0, 3, 1, 4)
        )
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = x + self.dropout(self.proj(a.transpose(1, 2).reshape(batch, length, dim)))
        return x + self.dropout(self.ff(self.norm2(x)))


def recency_bucket_tensor(age_hours: torch.Tensor) -> torch.Tensor:
    """:func:`recency_buckets` on a tensor."""
    return torch.floor(torch.log2(1.0 + age_hours.clamp(min=0))).clamp(0, N_RECENCY_BUCKETS - 1).long()


class UserTower(nn.Module):
    """History window -> one user vector per query: causal attention, so one pass serves every prefix.

    Each event's token is its item vector plus its engagement signals. A one-layer causal transformer encoder
    reads them; event ``j`` attends to events ``k <= j`` with a learned per-head bias of their distance
    ``j - k`` and of the hours between them, so no token depends on when it is read. A query (a column ``q``
    and a time: the next event's time in training, "now" at inference) pools the events up to ``q`` by
    attention with biases for how many events back and how many hours before the query time each one is, and
    adds the mean item vector and the latest event (with its age). Training asks a query at every column of a
    sequence (next-item targets at every position, as SASRec does); inference asks one, at the last column.
    """

    def __init__(self, dim: int, n_heads: int, max_history: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.max_history = max_history
        self.signal_proj = nn.Linear(3, dim)
        self.distance_bias = nn.Embedding(max_history, n_heads)
        self.gap_bias = nn.Embedding(N_RECENCY_BUCKETS, n_heads)
        self.encoder = BiasedEncoderLayer(dim, n_heads, dropout)
        self.pool_query = nn.Parameter(torch.randn(dim) * 0.02)
        self.pool_back = nn.Embedding(max_history, 1)
        self.pool_age = nn.Embedding(N_RECENCY_BUCKETS, 1)
        self.last_age = nn.Embedding(N_RECENCY_BUCKETS, dim)
        for emb in (self.distance_bias, self.gap_bias, self.pool_back, self.pool_age):
            nn.init.zeros_(emb.weight)
        self.out = nn.Linear(2 * dim, dim)

    def forward(
        self,
        item_vecs: torch.Tensor,
        signals: torch.Tensor,
        hours: torch.Tensor,
        mask: torch.Tensor,
        query_cols: torch.Tensor,
        query_hours: torch.Tensor,
    ) -> torch.Tensor:
        """User vectors (batch, Q, dim) of left-padded windows (batch, L) at ``query_cols`` (Q,), ``query_hours``
        (batch, Q); ``hours`` and ``query_hours`` in one (row-relative) hour scale."""
        batch, length = mask.shape
        cols = torch.arange(length, device=mask.device)
        dist = cols[:, None] - cols[None, :]  # (query j, key k)
        # padding keys are never read; a padding row reads itself only (its output is never used)
        allowed = (dist >= 0)[None] & (mask[:, None, :] | (dist == 0)[None])
        gap = recency_bucket_tensor(hours[:, :, None] - hours[:, None, :])
        bias = self.distance_bias(dist.clamp(0, self.max_history - 1))[None] + self.gap_bias(gap)
        x = item_vecs + self.signal_proj(signals)
        bias = bias.permute(0, 3, 1, 2).to(x.dtype).masked_fill(~allowed[:, None], float("-inf"))
        h = self.encoder(x, bias)
        back = query_cols[:, None] - cols[None, :]  # (Q, L): events back from the query column
        readable = (back >= 0)[None] & mask[:, None, :]
        age = recency_bucket_tensor(query_hours[:, :, None] - hours[:, None, :])
        scores = (
            (h @ self.pool_query)[:, None, :] / math.sqrt(h.shape[-1])
            + self.pool_back(back.clamp(0, self.max_history - 1))[None, :, :, 0]
            + self.pool_age(age)[..., 0]
        )
        scores = scores.masked_fill(~(readable | (back == 0)[None]), float("-inf"))
        pooled = torch.softmax(scores.float(), dim=-1).to(h.dtype) @ h
        # the mean of the history's item vectors is a content-based user vector from the first step on; the
        # encoder learns what to add to it (order, recency, engagement)
        counts = readable.sum(-1, keepdim=True).clamp(min=1)
        mean_items = (readable.to(item_vecs.dtype) @ item_vecs) / counts
        last = h[:, query_cols] + self.last_age(recency_bucket_tensor(query_hours - hours[:, query_cols]))
        return mean_items + self.out(torch.cat([pooled, last], dim=-1))


class TwoTowerModel(nn.Module):
    """Item tower + user tower + a learned softmax temperature and per-item bias.

    The logit of (user, item) is ``cos(u, v) / temperature + bias(v)``: the cosine carries taste, the bias (a
    linear read-out of the item tower, so new items get one from their text) carries how often an item is
    engaged with at all, which a unit vector cannot express.
    """

    def __init__(self, n_items: int, n_categories: int, text_dim: int, cfg: ProfileSettings) -> None:
        super().__init__()
        self.items = ItemTower(n_items, n_categories, text_dim, cfg.hidden_dim, cfg.id_dropout)
        self.users = UserTower(cfg.hidden_dim, cfg.n_heads, cfg.max_history, cfg.dropout)
        self.item_bias = nn.Linear(cfg.hidden_dim, 1)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.item_bias.bias)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.07)))

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(0.01, 1.0)

    def encode_items(
        self, text: torch.Tensor, id_idx: torch.Tensor, cat_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit item vectors, item biases)."""
        raw = self.items(text, id_idx, cat_idx).float()
        return F.normalize(raw, dim=-1), self.item_bias(raw).squeeze(-1)


@dataclass
class CatalogFeatures:
    """The item tower's inputs for one catalog (aligned with its item order)."""

    text: torch.Tensor  # (n, text_dim)
    id_idx: torch.Tensor  # (n,) vocabulary slot, 0 = unknown
    cat_idx: torch.Tensor  # (n,) category slot, 0 = unknown


class TwoTowerRetriever:
    """A trained two-tower model with its vocabularies: encodes catalogs and histories into one space."""

    def __init__(
        self,
        model: TwoTowerModel,
        item_vocab: list[str],
        category_vocab: list[str],
        cfg: ProfileSettings,
        device: str = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.item_vocab = item_vocab
        self.category_vocab = category_vocab
        self.item_slot = {item: i + 1 for i, item in enumerate(item_vocab)}
        self.category_slot = {cat: i + 1 for i, cat in enumerate(category_vocab)}
        self.cfg = cfg
        self.device = device

    @property
    def dim(self) -> int:
        return self.cfg.hidden_dim

    def catalog_features(self, items: pd.DataFrame, text: np.ndarray) -> CatalogFeatures:
        """Tower inputs for ``items`` (any catalog: ids and categories unseen in training map to slot 0)."""
        return CatalogFeatures(
            text=torch.as_tensor(np.asarray(text, dtype=np.float32), device=self.device),
            id_idx=torch.as_tensor([self.item_slot.get(i, 0) for i in items["item_id"]], device=self.device),
            cat_idx=torch.as_tensor(
                [self.category_slot.get(c, 0) for c in items["category"]], device=self.device
            ),
        )

    @torch.inference_mode()
    def item_space(self, catalog: CatalogFeatures, batch_size: int = 8192) -> ItemSpace:
        """Item vectors and biases of a catalog, float32."""
        vecs, biases = [], []
        for s in range(0, len(catalog.id_idx), batch_size):
            with autocast(self.device):
                v, b = self.model.encode_items(
                    catalog.text[s : s + batch_size],
                    catalog.id_idx[s : s + batch_size],
                    catalog.cat_idx[s : s + batch_size],
                )
            vecs.append(v.float())
            biases.append(b.float())
        empty = torch.zeros(0, self.dim, device=self.device)
        return ItemSpace(
            vecs=torch.cat(vecs) if vecs else empty,
            bias=torch.cat(biases) if biases else empty[:, 0],
            scale=float(1.0 / self.model.temperature().detach()),
        )

    def catalog_space(self, items: pd.DataFrame, text: np.ndarray) -> ItemSpace:
        """Shortcut: :meth:`item_space` of :meth:`catalog_features`."""
        return self.item_space(self.catalog_features(items, text))

    def _user_forward(
        self, windows: HistoryWindows, now_hours: np.ndarray, item_vecs: torch.Tensor
    ) -> torch.Tensor:
        # gather the window's rows, zeros on padding (not a padded copy of the whole catalog per call)
        items = torch.as_tensor(np.where(windows.mask, windows.items, 0), device=self.device)
        mask = torch.as_tensor(windows.mask, device=self.device)
        hist = item_vecs[items].masked_fill(~mask.unsqueeze(-1), 0.0)
        # hours relative to the query time, so float32 keeps minutes (hours since 1970 would not)
        rel = np.where(windows.mask, windows.hours - now_hours[:, None], 0.0).astype(np.float32)
        length = windows.items.shape[1]
        with autocast(self.device):
            u = self.model.users(
                hist,
                torch.as_tensor(history_signals(windows), device=self.device),
                torch.as_tensor(rel, device=self.device),
                torch.as_tensor(windows.mask, device=self.device),
                torch.tensor([length - 1], device=self.device),
                torch.zeros(len(rel), 1, device=self.device),
            )[:, 0]
        return F.normalize(u.float(), dim=-1)

    @torch.inference_mode()
    def user_vectors(
        self, windows: HistoryWindows, now_hours: np.ndarray, item_vecs: torch.Tensor, batch_size: int = 1024
    ) -> torch.Tensor:
        """Unit user vectors for non-empty history windows (``item_vecs`` = this catalog's item vectors)."""
        if windows.items.shape[0] and not windows.mask.any(axis=1).all():
            raise ValueError(
                "every window needs at least one event; use cold_start_user_vectors for the rest"
            )
        out = torch.zeros(len(windows.items), self.dim, device=self.device)
        for rows in length_batches(windows.lengths, batch_size):
            vecs = self._user_forward(windows.take(rows).trimmed(), now_hours[rows], item_vecs)
            out[torch.as_tensor(rows, device=self.device)] = vecs
        return out

    def save(self, path: Path) -> None:
        """Write weights (state_dict), config and vocabularies into ``path``."""
        config = {
            "settings": self.cfg.model_dump(),
            "text_dim": self.model.items.text_proj[0].in_features,
            "item_vocab": self.item_vocab,
            "category_vocab": self.category_vocab,
        }
        save_weights(path, "profile", self.model, config)

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> TwoTowerRetriever:
        """Load what :meth:`save` wrote."""
        config = read_config(path, "profile")
        cfg = ProfileSettings(**config["settings"])
        model = TwoTowerModel(
            len(config["item_vocab"]), len(config["category_vocab"]), config["text_dim"], cfg
        )
        load_weights(model, path, "profile", device)
        return cls(model, config["item_vocab"], config["category_vocab"], cfg, device)


def cold_start_user_vectors(
    declared: list[list[str]],
    item_vecs: torch.Tensor,
    categories: np.ndarray,
    popularity: np.ndarray,
    interest_weight: float,
    cache: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Vectors for users without history: mean of declared-category centroids blended with the popular centroid.

    ``cache`` (a dict kept by the caller for one catalog) keeps the popular centroid, the category set and the
    category centroids between calls, so a serving request does not reduce the whole catalog again.
    """
    cache = {} if cache is None else cache
    if "popular" not in cache:
        weights = torch.as_tensor(popularity + 1.0, dtype=torch.float32, device=item_vecs.device)
        cache["popular"] = F.normalize((weights[:, None] * item_vecs).sum(0), dim=-1)
        cache["categories"] = set(categories.tolist())
        cache["centroids"] = {}
    popular = cache["popular"]
    centroids: dict[str, torch.Tensor] = cache["centroids"]
    out = []
    for cats in declared:
        known = [c for c in cats if c in cache["categories"] or c in centroids]
        if not known:
            out.append(popular)
            continue
        vecs = []
        for cat in known:
            if cat not in centroids:
                members = torch.as_tensor(np.flatnonzero(categories == cat), device=item_vecs.device)
                centroids[cat] = F.normalize(item_vecs[members].mean(0), dim=-1)
            vecs.append(centroids[cat])
        interest = F.normalize(torch.stack(vecs).mean(0), dim=-1)
        out.append(F.normalize(interest_weight * interest + (1 - interest_weight) * popular, dim=-1))
    return torch.stack(out) if out else torch.zeros(0, item_vecs.shape[1], device=item_vecs.device)


def user_vectors_at(
    encoder: TwoTowerRetriever,
    store: HistoryStore,
    user_ids: np.ndarray | list[str],
    hours: np.ndarray,
    item_vecs: torch.Tensor,
    cold_start: ColdStart,
) -> tuple[torch.Tensor, HistoryWindows]:
    """Vector of each (user, time) from the user's events strictly before that time; cold start where none.

    Returns the vectors and the history windows they were computed from (the ranker reuses them).
    """
    user_ids = np.asarray(user_ids, dtype=object)
    starts, ends = store.ends_before(user_ids, hours)
    windows = store.windows(starts, ends, encoder.cfg.max_history)
    out = torch.zeros(len(user_ids), encoder.dim, device=item_vecs.device)
    has_history = windows.mask.any(axis=1)
    if has_history.any():
        rows = np.flatnonzero(has_history)
        out[torch.as_tensor(rows, device=out.device)] = encoder.user_vectors(
            windows.take(rows), hours[rows], item_vecs
        )
    if (~has_history).any():
        rows = np.flatnonzero(~has_history)
        out[torch.as_tensor(rows, device=out.device)] = cold_start.vectors(
            [user_ids[r] for r in rows], item_vecs
        )
    return out, windows


@dataclass
class ColdStart:
    """What cold-start vectors need: declared interests per user, item categories and popularity, blend weight."""

    declared: Mapping[str, list[str]]
    categories: np.ndarray
    popularity: np.ndarray
    interest_weight: float
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_users(
        cls, users: pd.DataFrame, categories: np.ndarray, popularity: np.ndarray, interest_weight: float
    ) -> ColdStart:
        """From ``marts.user_features`` rows (their ``declared_interests``)."""
        declared = {
            str(u): split_list(v) for u, v in zip(users["user_id"], users["declared_interests"], strict=True)
        }
        return cls(declared, categories, popularity, interest_weight)

    def vectors(self, user_ids: list[str], item_vecs: torch.Tensor) -> torch.Tensor:
        """Cold-start vectors of ``user_ids`` (users without declared interests get the popular centroid).

        The catalog-wide centroids are computed once per ``item_vecs`` tensor and kept (serving calls this per
        request on a fixed catalog).
        """
        if self._cache.get("item_vecs") is not item_vecs:
            self._cache.clear()
            self._cache["item_vecs"] = item_vecs
        return cold_start_user_vectors(
            [self.declared.get(u, []) for u in user_ids],
            item_vecs,
            self.categories,
            self.popularity,
            self.interest_weight,
            cache=self._cache,
        )


@dataclass
class SequenceWindows:
    """Training windows over the history store: inputs ``[max(start, end - L), end)``, targets one event later.

    A window's loss covers its targets at offsets ``>= loss_from``: a user with more than ``L + 1`` events gets
    windows ending every ``L // 2`` events back from their last one, and each window after the earliest scores
    only its newest ``L // 2`` targets, so every target is scored once with at least ``L // 2`` events before it
    (or all its user's earlier events).
    """

    starts: np.ndarray
    ends: np.ndarray
    loss_from: np.ndarray
    width: int

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - np.maximum(self.starts, self.ends - self.width)

    @property
    def n_targets(self) -> int:
        return int((self.ends - np.maximum(self.loss_from - 1, self.starts)).sum())


def sequence_windows(store: HistoryStore, max_history: int) -> SequenceWindows:
    """The training windows of every user with at least two events (vectorized over users)."""
    bounds = np.asarray(list(store.offsets.values()), dtype=np.int64).reshape(-1, 2)
    bounds = bounds[bounds[:, 1] - bounds[:, 0] >= 2]
    if not len(bounds):
        empty = np.zeros(0, dtype=np.int64)
        return SequenceWindows(empty, empty, empty, max_history)
    stride = max(max_history // 2, 1)
    first, stop = bounds[:, 0], bounds[:, 1]
    last_end = stop - 1  # the input window of the user's last target ends before it
    extra = np.maximum(np.ceil((last_end - first - max_history) / stride), 0).astype(np.int64)
    per_user = extra + 1
    user = np.repeat(np.arange(len(bounds)), per_user)
    k = np.arange(len(user)) - np.repeat(np.cumsum(per_user) - per_user, per_user)  # 0 = the newest window
    ends = last_end[user] - k * stride
    earliest = k == extra[user]
    loss_from = np.where(earliest, first[user] + 1, ends - stride + 1)
    return SequenceWindows(first[user], ends, loss_from, max_history)


@dataclass
class SequenceBatch:
    """The tensors of one training step: windows, per-column query times, targets and which columns score."""

    text: torch.Tensor  # (n_needed, text_dim): the item tower's inputs for the items this step needs
    id_idx: torch.Tensor
    cat_idx: torch.Tensor
    hist_pos: torch.Tensor  # (B, L) row into the needed items; n_needed = padding
    signals: torch.Tensor
    hours: torch.Tensor
    mask: torch.Tensor
    query_hours: torch.Tensor  # (B, L)
    scored: torch.Tensor  # (B, L) bool: a target scored at this column
    cand_pos: torch.Tensor  # (n_candidates,) rows into the needed items
    labels: torch.Tensor  # (n_scored,) index into the candidates
    log_q: torch.Tensor  # (n_candidates,) sampled softmax's log expected count; zeros for the exact softmax
    loss_scale: float = 1.0  # DDP: world_size x this rank's share of the global batch's targets


def sequence_batch(
    store: HistoryStore,
    windows: SequenceWindows,
    rows: np.ndarray,
    catalog: CatalogFeatures,
    sampling: tuple[np.ndarray, int, torch.Generator] | None,
) -> SequenceBatch:
    """Tensors of ``windows[rows]``; ``sampling`` = (target share per item, uniform draws, generator) or None
    for an exact softmax over the catalog."""
    starts, ends, loss_from = windows.starts[rows], windows.ends[rows], windows.loss_from[rows]
    width = max(int(windows.lengths[rows].max()), 1)
    hist = store.windows(starts, ends, width)
    cols = ends[:, None] - width + np.arange(width)[None, :]
    target_at = np.where(hist.mask, cols + 1, 0)
    scored = hist.mask & (target_at >= loss_from[:, None])
    ref = store.hours[ends][:, None]  # the newest target's time: hours relative to it keep float32 precise
    targets = store.items[target_at[scored]]
    n_items = len(catalog.id_idx)
    if sampling is None:
        cand = np.arange(n_items)
        labels = targets
        log_q = np.zeros(n_items, dtype=np.float32)
    else:
        share, n_random, generator = sampling
        drawn = torch.randint(0, n_items, (n_random,), generator=generator).numpy()
        cand, inverse = np.unique(np.concatenate([targets, drawn]), return_inverse=True)
        labels = inverse[: len(targets)]
        # log-Q correction: the expected number of times the step's candidate set holds each item (the
        # targets follow their empirical share, the uniform draws 1/n each)
        log_q = np.log(len(targets) * share[cand] + n_random / n_items).astype(np.float32)
    needed, inverse = np.unique(np.concatenate([hist.items[hist.mask], cand]), return_inverse=True)
    n_hist = int(hist.mask.sum())
    hist_pos = np.full(hist.items.shape, len(needed))
    hist_pos[hist.mask] = inverse[:n_hist]
    device = catalog.id_idx.device
    needed_t = torch.as_tensor(needed, device=device)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=device)

    return SequenceBatch(
        text=catalog.text[needed_t],
        id_idx=catalog.id_idx[needed_t],
        cat_idx=catalog.cat_idx[needed_t],
        hist_pos=tensor(hist_pos),
        signals=tensor(history_signals(hist)),
        hours=tensor(np.where(hist.mask, hist.hours - ref, 0.0).astype(np.float32)),
        mask=tensor(hist.mask),
        query_hours=tensor((store.hours[target_at] - ref[:, 0:1]).astype(np.float32)),
        scored=tensor(scored),
        cand_pos=tensor(inverse[n_hist:]),
        labels=tensor(np.asarray(labels, dtype=np.int64)),
        log_q=tensor(log_q),
    )


class NextItemLoss(nn.Module):
    """Softmax cross-entropy of next-item prediction at every scored column of a batch (wraps the model, so
    DistributedDataParallel can wrap the whole step)."""

    def __init__(self, model: TwoTowerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        vecs, bias = self.model.encode_items(batch.text, batch.id_idx, batch.cat_idx)
        padded = torch.cat([vecs, torch.zeros(1, vecs.shape[1], device=vecs.device, dtype=vecs.dtype)])
        length = batch.mask.shape[1]
        u = self.model.users(
            padded[batch.hist_pos],
            batch.signals,
            batch.hours,
            batch.mask,
            torch.arange(length, device=batch.mask.device),
            batch.query_hours,
        )[batch.scored]
        space = ItemSpace(vecs[batch.cand_pos], bias[batch.cand_pos], 1.0)
        logits = space.logits(F.normalize(u.float(), dim=-1) / self.model.temperature()) - batch.log_q
        return F.cross_entropy(logits.float(), batch.labels) * batch.loss_scale


def evaluate_retrieval(
    encoder: TwoTowerRetriever,
    data: RecData,
    split: str,
    k: int = 10,
    max_users: int | None = None,
) -> dict[str, float]:
    """Full-ranking NDCG@k / Recall@20 of plain two-tower retrieval on ``split`` (history = events before it)."""
    view = data.as_of(data.split_start(split))
    relevant = data.relevant(split)
    store = HistoryStore.from_frame(view.histories, data.item_index)
    users = [u for u in relevant if u in store.offsets][:max_users]
    if not users:
        return {f"ndcg@{k}": float("nan"), "recall@20": float("nan"), "n_users": 0}
    space = encoder.catalog_space(data.items, data.item_text)
    windows = store.latest_windows(users, encoder.cfg.max_history)
    u = encoder.user_vectors(windows, np.full(len(users), to_hours([view.now])[0]), space.vecs)
    scores = mask_seen(space.logits(u).float(), view.exclusions(users))
    top = torch.topk(scores, min(max(k, 20), scores.shape[1]), dim=1).indices.cpu().numpy()
    ndcg = metrics.mean_defined(metrics.ndcg_at_k(top[r], relevant[u], k) for r, u in enumerate(users))
    recall = metrics.mean_defined(metrics.recall_at_k(top[r], relevant[u], 20) for r, u in enumerate(users))
    return {f"ndcg@{k}": ndcg, "recall@20": recall, "n_users": len(users)}


def train_profile_model(
    data: RecData, settings: Settings, rank: int = 0, world_size: int = 1
) -> tuple[TwoTowerRetriever, pd.DataFrame]:
    """Train the two towers on train-split histories; keep the epoch with the best valid NDCG@10.

    One causal pass per window scores a next-item target at every position. With ``world_size > 1`` (under
    ``torch.distributed``, see ``models.retrieval.two_tower_ddp``) the loss is wrapped in DistributedDataParallel and each
    rank takes every ``world_size``-th window of each batch of the same seeded order, so a step sees the same
    global batch as in one process; the ranks stay identical and keep the same best epoch.
    """
    cfg = settings.profile
    device = settings.resolved_device
    generator = seed_everything(settings.seed)
    train_view = data.as_of(data.split_start("valid"))
    store = HistoryStore.from_frame(train_view.histories, data.item_index)
    item_vocab = data.items["item_id"].tolist()
    category_vocab = sorted(data.items["category"].dropna().unique().tolist())
    model = TwoTowerModel(len(item_vocab), len(category_vocab), data.item_text.shape[1], cfg).to(device)
    encoder = TwoTowerRetriever(model, item_vocab, category_vocab, cfg, device)
    catalog = encoder.catalog_features(data.items, data.item_text)
    windows = sequence_windows(store, cfg.max_history)
    step: nn.Module = NextItemLoss(model)
    if world_size > 1:
        step = nn.parallel.DistributedDataParallel(step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device)
    n_items = data.n_items
    # an exact softmax over the catalog while that is cheap; sampled (in-batch targets + uniform draws, with
    # log-Q correction) beyond
    sampling = None
    if n_items > cfg.full_softmax_max_items:
        target_counts = np.bincount(store.items[_scored_targets(windows)], minlength=n_items)
        sampling = (target_counts / max(target_counts.sum(), 1), cfg.random_negatives, generator)
    history_rows: list[dict[str, Any]] = []
    stopping = EarlyStopping(cfg.patience, keep_first=True)
    batch_rng = np.random.default_rng(settings.seed)
    progress = EpochProgress("two-tower retriever", total=cfg.epochs, log=log).__enter__()
    for epoch in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        losses = []
        steps = 0
        for rows in length_batches(windows.lengths, cfg.batch_size, batch_rng):
            share = 1.0
            if world_size > 1:
                # one global batch per step, as in one process: rank r takes its rows r, r + w, ... (every rank
                # sees the same batch order and skips the same too-small batches, so all ranks step together)
                if len(rows) < world_size:
                    continue
                scored = windows.ends - windows.loss_from + 1
                share = world_size * scored[rows[rank::world_size]].sum() / scored[rows].sum()
                rows = rows[rank::world_size]
            batch = sequence_batch(store, windows, rows, catalog, sampling)
            # DDP averages the ranks' gradients: scaled so, the step's gradient is the global batch's mean loss's
            batch.loss_scale = float(share)
            steps += 1
            with autocast(device):
                loss = step(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
        model.eval()
        elapsed = time.perf_counter() - t0
        valid = evaluate_retrieval(encoder, data, "valid", max_users=settings.evaluation.max_users)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "valid_ndcg@10": valid["ndcg@10"],
            "valid_recall@20": valid["recall@20"],
            "examples_per_s": windows.n_targets / world_size / elapsed if elapsed > 0 else float("nan"),
            "steps": steps,
        }
        history_rows.append(row)
        progress.step(
            loss=row["train_loss"], valid_ndcg10=row["valid_ndcg@10"], examples_per_s=row["examples_per_s"]
        )
        score = valid["ndcg@10"] if not math.isnan(valid["ndcg@10"]) else -row["train_loss"]
        if stopping.step(score, model):
            progress.finish(f"early stop: no valid gain for {cfg.patience} epochs")
            break
    progress.finish()
    stopping.restore(model)
    model.eval()
    return encoder, pd.DataFrame(history_rows)


def _scored_targets(windows: SequenceWindows) -> np.ndarray:
    """Store offsets of every target the windows score (each once)."""
    lo = np.maximum(windows.loss_from, windows.starts + 1)
    counts = windows.ends - lo + 1
    base = np.repeat(lo, counts)
    return base + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
