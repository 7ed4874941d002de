"""The two-tower retriever: a user's time-ordered history -> a vector in the item tower's space.

Two towers share one space. The item tower adds a projection of the frozen text embedding, a learned id
embedding (slot 0 = an item the model never saw, so new items fall back to text + category) and a category
embedding. The user tower turns the last ``max_history`` engaged items (item vector + dwell/rating signals +
recency bucket + position) into one vector with a one-layer transformer encoder and attention pooling. Training
is next-item prediction with a sampled softmax over in-batch targets plus uniformly drawn catalog items (mixed
negatives: in-batch negatives alone are all popular items, which leaves the long tail unranked).

Users without history get :func:`cold_start_user_vectors`: the mean of the centroids of their declared
categories, blended with the popularity-weighted catalog centroid.

The readable side (category/tag weights and keywords from the history) is ``models.interests``.
"""

from __future__ import annotations

import json
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
from models.retrieval import ItemSpace, mask_seen
from models.settings import ProfileSettings, Settings
from models.torch_utils import autocast, grad_scaler, seed_everything

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


class UserTower(nn.Module):
    """History window (item vectors + signals + recency + position) -> one user vector."""

    def __init__(self, dim: int, n_heads: int, max_history: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.signal_proj = nn.Linear(3, dim)
        self.recency_emb = nn.Embedding(N_RECENCY_BUCKETS, dim)
        self.position_emb = nn.Embedding(max_history, dim)
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=n_heads,
            dim_feedforward=2 * dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.pool_query = nn.Parameter(torch.randn(dim) * 0.02)
        self.out = nn.Linear(2 * dim, dim)

    def forward(
        self, item_vecs: torch.Tensor, signals: torch.Tensor, recency: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        length = item_vecs.shape[1]
        # position 0 = most recent event, counted from the right, so trimming leading padding changes nothing
        positions = torch.arange(length - 1, -1, -1, device=item_vecs.device)
        x = (
            item_vecs
            + self.signal_proj(signals)
            + self.recency_emb(recency)
            + self.position_emb(positions)[None]
        )
        h = self.encoder(x, src_key_padding_mask=~mask)
        scores = (h @ self.pool_query) / math.sqrt(h.shape[-1])
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        pooled = (weights.unsqueeze(-1) * h).sum(1)
        # the mean of the history's item vectors is a content-based user vector from the first step on; the
        # encoder learns what to add to it (order, recency, engagement)
        mean_items = (item_vecs * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return mean_items + self.out(torch.cat([pooled, h[:, -1]], dim=-1))  # column L-1 is the most recent


class TwoTowerModel(nn.Module):
    """Item tower + user tower + a learned softmax temperature and per-item bias.

    The logit of (user, item) is ``cos(u, v) / temperature + bias(v)``: the cosine carries taste, the bias (a
    linear read-out of the item tower, so new items get one from their text) carries how often an item is
    engaged with at all, which a unit vector cannot express.
    """

    def __init__(self, n_items: int, n_categories: int, text_dim: int, cfg: ProfileSettings) -> None:
        super().__init__()
        self.items = ItemTower(n_items, n_categories, text_dim, cfg.hidden_dim, cfg.id_dropout)
        self.users = UserTower(cfg.hidden_dim, cfg.n_heads, cfg.max_history)
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
        age = now_hours[:, None] - windows.hours
        with autocast(self.device):
            u = self.model.users(
                hist,
                torch.as_tensor(history_signals(windows), device=self.device),
                torch.as_tensor(recency_buckets(age), device=self.device),
                torch.as_tensor(windows.mask, device=self.device),
            )
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
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "profile_weights.pt")
        (path / "profile_config.json").write_text(
            json.dumps(
                {
                    "settings": self.cfg.model_dump(),
                    "text_dim": self.model.items.text_proj[0].in_features,
                    "item_vocab": self.item_vocab,
                    "category_vocab": self.category_vocab,
                }
            )
        )

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> TwoTowerRetriever:
        """Load what :meth:`save` wrote."""
        config = json.loads((path / "profile_config.json").read_text())
        cfg = ProfileSettings(**config["settings"])
        model = TwoTowerModel(
            len(config["item_vocab"]), len(config["category_vocab"]), config["text_dim"], cfg
        )
        model.load_state_dict(torch.load(path / "profile_weights.pt", map_location=device, weights_only=True))
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


def _next_item_examples(store: HistoryStore) -> tuple[np.ndarray, np.ndarray]:
    """(user start offset, target offset) for every event that has at least one earlier event of its user."""
    starts, targets = [], []
    for start, end in store.offsets.values():
        if end - start >= 2:
            targets.append(np.arange(start + 1, end))
            starts.append(np.full(end - start - 1, start))
    if not targets:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(starts), np.concatenate(targets)


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


def train_profile_model(data: RecData, settings: Settings) -> tuple[TwoTowerRetriever, pd.DataFrame]:
    """Train the two towers on train-split histories; keep the epoch with the best valid NDCG@10."""
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
    starts, targets = _next_item_examples(store)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device)
    n_items = data.n_items
    history_rows: list[dict[str, Any]] = []
    best_state, best_ndcg = None, -1.0
    lengths = np.minimum(targets - starts, cfg.max_history)
    # an exact softmax over the catalog while that is cheap; sampled (in-batch + uniform) negatives beyond
    full_softmax = n_items <= cfg.full_softmax_max_items
    batch_rng = np.random.default_rng(settings.seed)
    progress = EpochProgress("two-tower retriever", total=cfg.epochs, log=log).__enter__()
    for epoch in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        losses = []
        for rows in length_batches(lengths, cfg.batch_size, batch_rng):
            windows = store.windows(starts[rows], targets[rows], cfg.max_history).trimmed()
            target_items = store.items[targets[rows]]
            if full_softmax:
                cand_items = np.arange(n_items)
            else:
                random_items = torch.randint(0, n_items, (cfg.random_negatives,), generator=generator).numpy()
                cand_items = np.concatenate([target_items, random_items])
            # run the item tower once over the distinct items the batch needs
            n_hist = int(windows.mask.sum())
            needed, inverse = np.unique(
                np.concatenate([windows.items[windows.mask], cand_items]), return_inverse=True
            )
            needed_t = torch.as_tensor(needed, device=device)
            with autocast(device):
                vecs, bias = model.encode_items(
                    catalog.text[needed_t], catalog.id_idx[needed_t], catalog.cat_idx[needed_t]
                )
                hist_pos = np.full(windows.items.shape, len(needed))
                hist_pos[windows.mask] = inverse[:n_hist]
                padded = torch.cat([vecs, torch.zeros(1, vecs.shape[1], device=device, dtype=vecs.dtype)])
                age = store.hours[targets[rows]][:, None] - windows.hours
                u = model.users(
                    padded[torch.as_tensor(hist_pos, device=device)],
                    torch.as_tensor(history_signals(windows), device=device),
                    torch.as_tensor(recency_buckets(age), device=device),
                    torch.as_tensor(windows.mask, device=device),
                )
                cand_pos = torch.as_tensor(inverse[n_hist:], device=device)
                space = ItemSpace(vecs[cand_pos], bias[cand_pos], 1.0)
                logits = space.logits(F.normalize(u.float(), dim=-1) / model.temperature())
                if full_softmax:
                    labels = torch.as_tensor(target_items, device=device)
                else:
                    # another row's target (or a random draw) equal to this row's target is not a negative
                    cand_t = torch.as_tensor(cand_items, device=device)
                    same = cand_t[None, :] == torch.as_tensor(target_items, device=device)[:, None]
                    diag = torch.zeros_like(same)
                    diag[:, : len(rows)] = torch.eye(len(rows), dtype=torch.bool, device=device)
                    logits = logits.masked_fill(same & ~diag, float("-inf"))
                    labels = torch.arange(len(rows), device=device)
                loss = F.cross_entropy(logits.float(), labels)
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
            "examples_per_s": len(targets) / elapsed if elapsed > 0 else float("nan"),
        }
        history_rows.append(row)
        progress.step(
            loss=row["train_loss"], valid_ndcg10=row["valid_ndcg@10"], examples_per_s=row["examples_per_s"]
        )
        score = valid["ndcg@10"] if not math.isnan(valid["ndcg@10"]) else -row["train_loss"]
        if best_state is None or score > best_ndcg:
            best_ndcg = score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    progress.finish()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return encoder, pd.DataFrame(history_rows)
