"""Deep ranker over (user, candidate) pairs with target attention over the history, and MMR re-ranking.

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
shown in the same slot, which is the relevance ranking we want.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models import metrics
from models.history import HistoryStore, HistoryWindows, length_batches, to_hours
from models.profile import ColdStart, ProfileEncoder, history_signals, user_vectors_at
from models.recdata import RecData
from models.retrieval import ItemSpace
from models.settings import RankerSettings, Settings
from models.torch_utils import autocast, grad_scaler, seed_everything

log = logging.getLogger(__name__)

DENSE_FEATURES = [
    "log_user_prior_impressions",
    "log_user_prior_clicks",
    "user_prior_ctr_smoothed",
    "log_item_prior_impressions",
    "log_item_prior_clicks",
    "item_prior_ctr_smoothed",
    "log_item_age_hours",
    "log_history_length",
    "log_hours_since_last_engagement",
    "two_tower_logit",
    "category_match_share",
]
TWO_TOWER_FEATURE = DENSE_FEATURES.index("two_tower_logit")
MAX_POSITION = 50  # positions past this share one slot in the position tower


@dataclass
class PairInputs:
    """Everything the ranker reads for a batch of pairs, as arrays aligned on the pair axis."""

    candidate: np.ndarray  # catalog position
    windows: HistoryWindows
    user_vec: torch.Tensor  # profile-model user vector at the pair's time
    dense: np.ndarray  # (n, len(DENSE_FEATURES)), raw (normalized inside the ranker)
    user_group: np.ndarray  # vocabulary slots
    region: np.ndarray
    position: np.ndarray
    label: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.candidate)

    def take(self, rows: np.ndarray) -> PairInputs:
        return PairInputs(
            candidate=self.candidate[rows],
            windows=self.windows.take(rows),
            user_vec=self.user_vec[torch.as_tensor(rows, device=self.user_vec.device)],
            dense=self.dense[rows],
            user_group=self.user_group[rows],
            region=self.region[rows],
            position=self.position[rows],
            label=self.label[rows],
            weight=self.weight[rows],
        )


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
        self.model.eval()
        out = np.zeros(len(pairs), dtype=np.float32)
        for rows in length_batches(pairs.windows.lengths, batch_size):
            out[rows] = self._logits(pairs.take(rows), False).cpu().numpy()
        return out

    def save(self, path: Path) -> None:
        """Write weights (state_dict), config, vocabularies and the feature schema into ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "ranker_weights.pt")
        (path / "ranker_config.json").write_text(
            json.dumps(
                {"settings": self.cfg.model_dump(), "vocab": self.vocab, "profile_dim": self.profile_dim}
            )
        )

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Ranker:
        """Load what :meth:`save` wrote."""
        config = json.loads((path / "ranker_config.json").read_text())
        cfg = RankerSettings(**config["settings"])
        model = _new_model(config["vocab"], config["profile_dim"], cfg)
        model.load_state_dict(torch.load(path / "ranker_weights.pt", map_location=device, weights_only=True))
        return cls(model, config["vocab"], cfg, config["profile_dim"], device)


def feature_schema() -> dict[str, Any]:
    """The ranker's inputs, for the registry's feature schema file."""
    return {
        "dense": DENSE_FEATURES,
        "categorical": ["item_id", "category", "creator_group", "user_group", "region"],
        "sequence": "last max_history engaged items before the pair time, with dwell and rating signals",
        "frozen": ["profile user vector", "profile item vector"],
        "training_only": ["position"],
        "label": "clicked",
        "weight": "1 + log1p(dwell_seconds) / 4 on clicks",
    }


def _new_model(vocab: Mapping[str, list[str]], profile_dim: int, cfg: RankerSettings) -> DeepRanker:
    return DeepRanker(
        len(vocab["item"]), len(vocab["category"]), len(vocab["creator_group"]), len(vocab["user_group"]),
        len(vocab["region"]), profile_dim, cfg,
    )  # fmt: skip


def _log1p(x: pd.Series | np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64)), 0, None))


@dataclass
class PairContext:
    """What pair building needs besides the pairs: the profile encoder, histories and catalog-wide arrays."""

    encoder: ProfileEncoder
    store: HistoryStore
    space: ItemSpace  # the catalog in the profile model's space
    categories: np.ndarray  # category per catalog position
    published_hours: np.ndarray
    cold_start: ColdStart
    users: pd.DataFrame  # marts.user_features (user_group, region)


UserState = tuple[np.ndarray, torch.Tensor, HistoryWindows]  # (pair -> row codes, vectors, windows) per row


def user_state(pairs: pd.DataFrame, ctx: PairContext) -> UserState:
    """User vectors and history windows of the distinct (user, time) rows of ``pairs`` (one request = one row)."""
    key = pd.MultiIndex.from_arrays(
        [pairs["user_id"].to_numpy(dtype=object), pairs["hours"].to_numpy(np.float64)]
    )
    codes, uniques = pd.factorize(key)
    u_users = np.asarray(uniques.get_level_values(0), dtype=object)
    u_hours = np.asarray(uniques.get_level_values(1), dtype=np.float64)
    vecs, windows = user_vectors_at(ctx.encoder, ctx.store, u_users, u_hours, ctx.space.vecs, ctx.cold_start)
    return codes, vecs, windows


def build_pair_inputs(
    pairs: pd.DataFrame, ctx: PairContext, ranker: Ranker, state: UserState | None = None
) -> PairInputs:
    """Ranker inputs for pairs with columns user_id, item_idx, hours, position, label, dwell_seconds and the counts.

    Count columns: user_prior_impressions, user_prior_clicks, item_prior_impressions, item_prior_clicks (as of the
    pair's time). The history window and user vector are taken strictly before ``hours`` (``state`` passes them
    in when the caller has them already).
    """
    hours = pairs["hours"].to_numpy(np.float64)
    codes, u_vec, u_windows = state if state is not None else user_state(pairs, ctx)
    windows = u_windows.take(codes)
    user_vec = u_vec[torch.as_tensor(codes, device=u_vec.device)]
    cand = pairs["item_idx"].to_numpy(np.int64)
    two_tower = (
        ctx.space.pair_logits(user_vec, torch.as_tensor(cand, device=user_vec.device)).float().cpu().numpy()
    )
    hist_len = windows.mask.sum(1)
    same_cat = (
        ctx.categories[np.where(windows.mask, windows.items, 0)] == ctx.categories[cand][:, None]
    ) & windows.mask
    last_hours = np.where(hist_len > 0, windows.hours[:, -1], np.nan)
    since_last = np.where(hist_len > 0, hours - last_hours, 24.0 * 365)
    u_imp, u_clk = pairs["user_prior_impressions"].fillna(0), pairs["user_prior_clicks"].fillna(0)
    i_imp, i_clk = pairs["item_prior_impressions"].fillna(0), pairs["item_prior_clicks"].fillna(0)
    age = hours - ctx.published_hours[cand]
    dense = np.stack(
        [
            _log1p(u_imp),
            _log1p(u_clk),
            ((u_clk + 1.0) / (u_imp + 10.0)).to_numpy(),  # smoothed towards 10%: a new user is not 0% or 100%
            _log1p(i_imp),
            _log1p(i_clk),
            ((i_clk + 1.0) / (i_imp + 10.0)).to_numpy(),
            _log1p(np.nan_to_num(age, nan=24.0 * 365)),
            np.log1p(hist_len),
            _log1p(since_last),
            two_tower,
            same_cat.sum(1) / np.maximum(hist_len, 1),
        ],
        axis=1,
    ).astype(np.float32)
    user_rows = ctx.users.set_index("user_id")
    groups = pairs["user_id"].map(user_rows["user_group"]) if len(user_rows) else pairs["user_id"]
    regions = pairs["user_id"].map(user_rows["region"]) if len(user_rows) else pairs["user_id"]
    dwell = (
        pairs["dwell_seconds"].fillna(0).to_numpy(np.float64)
        if "dwell_seconds" in pairs
        else np.zeros(len(pairs))
    )
    label = (
        pairs["label"].to_numpy(np.float32) if "label" in pairs else np.zeros(len(pairs), dtype=np.float32)
    )
    return PairInputs(
        candidate=cand,
        windows=windows,
        user_vec=user_vec,
        dense=dense,
        user_group=ranker.slot("user_group", groups),
        region=ranker.slot("region", regions),
        position=pairs["position"].fillna(0).to_numpy(np.int64)
        if "position" in pairs
        else np.zeros(len(pairs), dtype=np.int64),
        label=label,
        weight=np.where(label > 0, 1.0 + np.log1p(np.clip(dwell, 0, None)) / 4.0, 1.0).astype(np.float32),
    )


def samples_to_pairs(samples: pd.DataFrame, item_index: Mapping[str, int]) -> pd.DataFrame:
    """``marts.training_samples`` rows as pair rows (catalog position, hours); rows of unknown items dropped."""
    pairs = samples.assign(
        item_idx=np.asarray([item_index.get(i, -1) for i in samples["item_id"]], dtype=np.int64),
        hours=to_hours(samples["event_ts"]) if len(samples) else np.zeros(0),
    )
    return pairs[pairs["item_idx"] >= 0].reset_index(drop=True)


def pair_context(
    data: RecData, encoder: ProfileEncoder, cold_interest_weight: float, popularity: np.ndarray
) -> PairContext:
    """The pair-building context for ``data``'s catalog and histories."""
    categories = data.items["category"].fillna("").to_numpy(dtype=object)
    return PairContext(
        encoder=encoder,
        store=HistoryStore.from_frame(data.histories, data.item_index),
        space=encoder.catalog_space(data.items, data.item_text),
        categories=categories,
        published_hours=to_hours(data.items["published_at"]),
        cold_start=ColdStart.from_users(data.users, categories, popularity, cold_interest_weight),
        users=data.users,
    )


def grouped_ndcg(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups (requests) that contain at least one positive, ranking each group by score."""
    frame = pd.DataFrame({"g": groups, "y": labels, "s": scores})
    values = []
    for _, part in frame.groupby("g", sort=False):
        if part["y"].sum() <= 0:
            continue
        ranked = metrics.rank_by_score(list(range(len(part))), part["s"].to_numpy())
        relevant = set(np.flatnonzero(part["y"].to_numpy() > 0).tolist())
        values.append(metrics.ndcg_at_k(ranked, relevant, k))
    return metrics.mean_defined(values)


def ranking_groups(pairs: pd.DataFrame) -> np.ndarray:
    """The lists valid NDCG ranks: requests, except one-item requests, grouped per user and day instead.

    Rating-only data (MovieLens) makes each rating its own one-item request; ranked alone, every such list has
    NDCG 1 and early stopping would see no change. ``training_samples`` samples those rows within the user's
    session, so the user's rated items of a day are ranked together (liked ones above disliked ones).
    """
    request = pairs["request_id"].astype(str)
    single = request.map(request.value_counts()) == 1
    user_day = (
        "user|"
        + pairs["user_id"].astype(str)
        + "|"
        + pd.to_datetime(pairs["event_ts"]).dt.strftime("%Y-%m-%d")
    )
    return request.where(~single, user_day).to_numpy()


_DAY_KEY = 1_000_000  # item position * _DAY_KEY + day number: one sortable key per (item, day)


def _day_numbers(ts: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 of each timestamp (the calendar day dbt's event_date holds)."""
    return (pd.to_datetime(ts).to_numpy().astype("datetime64[D]").astype(np.int64)).astype(np.int64)


def prior_item_counts(
    interactions: pd.DataFrame, item_index: Mapping[str, int], items: np.ndarray, days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks of catalog ``items`` on the whole days before ``days`` (as training_samples has)."""
    idx = np.asarray([item_index.get(i, -1) for i in interactions["item_id"]], dtype=np.int64)
    daily = (
        pd.DataFrame(
            {
                "key": idx * _DAY_KEY + _day_numbers(interactions["event_ts"]),
                "imp": 1.0,
                "clk": interactions["clicked"].fillna(0).to_numpy(float),
            }
        )[idx >= 0]
        .groupby("key", sort=True)[["imp", "clk"]]
        .sum()
    )
    keys = daily.index.to_numpy(np.int64)
    cum = daily.groupby(keys // _DAY_KEY).cumsum()
    pos = np.searchsorted(keys, items * _DAY_KEY + days, side="left") - 1
    known = (pos >= 0) & (keys[np.clip(pos, 0, None)] // _DAY_KEY == items) if len(keys) else pos < -1
    at = np.clip(pos, 0, None)
    imp = np.where(known, cum["imp"].to_numpy()[at] if len(keys) else 0.0, 0.0)
    clk = np.where(known, cum["clk"].to_numpy()[at] if len(keys) else 0.0, 0.0)
    return imp, clk


def unexposed_negatives(
    pairs: pd.DataFrame, data: RecData, per_positive: int, seed: int, cutoff: pd.Timestamp
) -> tuple[pd.DataFrame, np.ndarray]:
    """Label-0 pairs of items the user was not shown before ``cutoff``, for positives of one-item requests.

    Rating-only data (MovieLens) has no impressions that were not chosen: every negative in
    ``training_samples`` is a movie the user watched and disliked, so a ranker trained on them alone learns
    "liked, given watched" but never which movies a user picks, which full-catalog recommendation needs. Each
    positive of a one-item request gets ``per_positive`` uniformly drawn items the user has no impression of
    before ``cutoff`` (the end of the pairs' split: what the user does later must not pick the negatives, or
    items rated in the test window would never be negatives) and that were published by then, at the
    positive's time, with the same point-in-time counts the marts compute (user counts of the positive's row,
    item counts of whole days before). Returns the pairs and, per pair, the row of its positive in ``pairs``.
    Slate data (the simulator, MIND logs) has none.
    """
    request = pairs["request_id"].astype(str)
    single = (request.map(request.value_counts()) == 1).to_numpy() & (pairs["label"].to_numpy() > 0)
    rows = np.flatnonzero(single)
    if per_positive <= 0 or not len(rows):
        return pairs.iloc[:0].copy(), np.zeros(0, dtype=np.int64)
    before = data.interactions[data.interactions["event_ts"] < cutoff]
    shown = (
        pd.Series(data.item_idx(before["item_id"])).groupby(before["user_id"].to_numpy()).agg(set).to_dict()
    )
    published = np.nan_to_num(to_hours(data.items["published_at"]), nan=-np.inf)
    rng = np.random.default_rng(seed)
    users = pairs["user_id"].to_numpy(dtype=object)
    hours = pairs["hours"].to_numpy(np.float64)
    picked_rows, picked_items = [], []
    for r in rows:
        draw = rng.integers(0, data.n_items, size=4 * per_positive)
        seen = shown.get(users[r], set())
        keep = [int(i) for i in dict.fromkeys(draw.tolist()) if i not in seen and published[i] <= hours[r]]
        keep = keep[:per_positive]
        picked_rows.extend([r] * len(keep))
        picked_items.extend(keep)
    source = np.asarray(picked_rows, dtype=np.int64)
    items = np.asarray(picked_items, dtype=np.int64)
    negatives = pairs.iloc[source].reset_index(drop=True).copy()
    negatives["item_idx"] = items
    negatives["item_id"] = data.items["item_id"].to_numpy()[items]
    negatives["label"] = 0
    negatives["dwell_seconds"] = 0.0
    imp, clk = prior_item_counts(
        data.interactions, data.item_index, items, _day_numbers(negatives["event_ts"])
    )
    negatives["item_prior_impressions"] = imp
    negatives["item_prior_clicks"] = clk
    return negatives, source


def with_unexposed_negatives(
    pairs: pd.DataFrame, data: RecData, per_positive: int, seed: int, cutoff: pd.Timestamp
) -> tuple[pd.DataFrame, np.ndarray]:
    """``pairs`` plus :func:`unexposed_negatives`, and the ``ranking_groups`` of every row (negatives join
    their positive's list)."""
    groups = ranking_groups(pairs)
    negatives, source = unexposed_negatives(pairs, data, per_positive, seed, cutoff)
    if not len(negatives):
        return pairs, groups
    return pd.concat([pairs, negatives], ignore_index=True), np.concatenate([groups, groups[source]])


def train_ranker(data: RecData, settings: Settings, encoder: ProfileEncoder) -> tuple[Ranker, pd.DataFrame]:
    """Fit on train samples; early-stop on valid NDCG@10 over ``ranking_groups`` (AUC logged); keep the best epoch."""
    cfg = settings.ranker
    device = settings.resolved_device
    seed_everything(settings.seed + 1)
    vocab = {
        "item": data.items["item_id"].tolist(),
        "category": sorted(data.items["category"].dropna().unique().tolist()),
        "creator_group": sorted(data.items["creator_group"].dropna().unique().tolist()),
        "user_group": sorted(data.users["user_group"].dropna().astype(str).unique().tolist()),
        "region": sorted(data.users["region"].dropna().astype(str).unique().tolist()),
    }
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
    best_state: dict[str, torch.Tensor] | None = None
    best_score, since_best = -math.inf, 0
    use_position = cfg.position_debias
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
        log.info("ranker epoch %s: %s", epoch + 1, row)
        score = row["valid_ndcg@10"] if not math.isnan(row["valid_ndcg@10"]) else -row["train_loss"]
        if score > best_score:
            best_score, since_best = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return ranker, pd.DataFrame(rows)


def mmr_rerank(
    candidates: np.ndarray,
    relevance: np.ndarray,
    item_embeddings: np.ndarray,
    k: int,
    mmr_lambda: float,
) -> np.ndarray:
    """Greedy maximal marginal relevance: argmax lambda * rel - (1 - lambda) * max cosine to the items already picked.

    ``item_embeddings`` are the catalog's unit vectors (numpy: these are tiny per-user products, where torch's
    thread pool costs more than the arithmetic). Relevance is min-max scaled to [0, 1] within the list so it is
    on the cosine's scale; lambda = 1 keeps the relevance order.
    """
    n = len(candidates)
    k = min(k, n)
    if k == 0:
        return candidates[:0]
    order = np.argsort(-relevance, kind="stable")
    if mmr_lambda >= 1.0:
        return candidates[order[:k]]
    vecs = np.asarray(item_embeddings[candidates], dtype=np.float32)
    rel = relevance.astype(np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.zeros_like(rel)
    picked = [int(order[0])]
    # similarities to the picked items only (k matrix-vector products, not the full n x n matrix)
    max_sim = vecs @ vecs[order[0]]
    available = np.ones(n, dtype=bool)
    available[order[0]] = False
    for _ in range(k - 1):
        gain = mmr_lambda * rel - (1 - mmr_lambda) * max_sim
        gain[~available] = -np.inf
        nxt = int(np.argmax(gain))
        picked.append(nxt)
        available[nxt] = False
        max_sim = np.maximum(max_sim, vecs @ vecs[nxt])
    return candidates[np.asarray(picked)]
