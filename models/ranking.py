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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models import metrics
from models.candidates import CandidateSet
from models.history import HistoryStore, HistoryWindows, length_batches, to_hours
from models.progress import EpochProgress
from models.recdata import RecData
from models.retrieval import ItemSpace
from models.settings import RankerSettings, Settings
from models.torch_utils import autocast, grad_scaler, seed_everything
from models.two_tower import ColdStart, TwoTowerRetriever, history_signals, user_vectors_at

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
        if self.model.training:  # eval() walks every submodule: a per-request cost when already in eval mode
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

    encoder: TwoTowerRetriever
    store: HistoryStore
    space: ItemSpace  # the catalog in the profile model's space
    categories: np.ndarray  # category per catalog position
    published_hours: np.ndarray
    cold_start: ColdStart
    users: pd.DataFrame  # marts.user_features (user_group, region)
    # integer codes of ``categories`` (the same equalities as the strings, compared in C); computed once here, as
    # factorizing a 100k-item catalog per request cost serving 2-3 ms of CPU
    category_codes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.category_codes is None:
            self.category_codes = pd.factorize(self.categories)[0]


UserState = tuple[np.ndarray, torch.Tensor, HistoryWindows]  # (pair -> row codes, vectors, windows) per row


def user_state(pairs: pd.DataFrame, ctx: PairContext) -> UserState:
    """User vectors and history windows of the distinct (user, time) rows of ``pairs`` (one request = one row)."""
    # factorize users and times apart, then their pair code: the distinct rows in order of first appearance,
    # as factorizing the (user, time) tuples would give, without building a tuple per pair
    user_codes, users = pd.factorize(pairs["user_id"].to_numpy(dtype=object))
    hour_codes, hours = pd.factorize(pairs["hours"].to_numpy(np.float64))
    codes, uniques = pd.factorize(user_codes.astype(np.int64) * max(len(hours), 1) + hour_codes)
    u_users = np.asarray(users, dtype=object)[uniques // max(len(hours), 1)]
    u_hours = np.asarray(hours, dtype=np.float64)[uniques % max(len(hours), 1)]
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
    user_rows = ctx.users.set_index("user_id")
    groups = pairs["user_id"].map(user_rows["user_group"]) if len(user_rows) else pairs["user_id"]
    regions = pairs["user_id"].map(user_rows["region"]) if len(user_rows) else pairs["user_id"]
    return pair_inputs_from_arrays(
        ctx,
        pairs["item_idx"].to_numpy(np.int64),
        pairs["hours"].to_numpy(np.float64),
        state if state is not None else user_state(pairs, ctx),
        user_counts=(pairs["user_prior_impressions"], pairs["user_prior_clicks"]),
        item_counts=(pairs["item_prior_impressions"], pairs["item_prior_clicks"]),
        user_group=ranker.slot("user_group", groups),
        region=ranker.slot("region", regions),
        position=pairs["position"].fillna(0).to_numpy(np.int64) if "position" in pairs else None,
        label=pairs["label"].to_numpy(np.float32) if "label" in pairs else None,
        dwell=pairs["dwell_seconds"].fillna(0).to_numpy(np.float64) if "dwell_seconds" in pairs else None,
    )


def _zero_nan(x: pd.Series | np.ndarray) -> np.ndarray:
    """float64 values with NaN as 0 (what ``Series.fillna(0)`` gives)."""
    values = np.asarray(x, dtype=np.float64)
    return np.where(np.isnan(values), 0.0, values)


def pair_inputs_from_arrays(
    ctx: PairContext,
    cand: np.ndarray,
    hours: np.ndarray,
    state: UserState,
    user_counts: tuple[np.ndarray | pd.Series, np.ndarray | pd.Series],
    item_counts: tuple[np.ndarray | pd.Series, np.ndarray | pd.Series],
    user_group: np.ndarray,
    region: np.ndarray,
    position: np.ndarray | None = None,
    label: np.ndarray | None = None,
    dwell: np.ndarray | None = None,
) -> PairInputs:
    """Ranker inputs from per-pair arrays: catalog positions, hours, the users' state, counts and vocabulary slots.

    ``state`` is (pair -> user row, user vectors, history windows) per distinct user row; ``user_counts`` /
    ``item_counts`` are (impressions, clicks) per pair as of the pair's time (NaN counts as 0); ``user_group`` /
    ``region`` are the ranker's vocabulary slots per pair. :func:`build_pair_inputs` is the DataFrame front end.
    """
    codes, u_vec, u_windows = state
    windows = u_windows.take(codes)
    user_vec = u_vec[torch.as_tensor(codes, device=u_vec.device)]
    two_tower = (
        ctx.space.pair_logits(user_vec, torch.as_tensor(cand, device=user_vec.device)).float().cpu().numpy()
    )
    hist_len = windows.mask.sum(1)
    cat_codes = ctx.category_codes
    assert cat_codes is not None  # set in PairContext.__post_init__
    same_cat = (
        cat_codes[np.where(windows.mask, windows.items, 0)] == cat_codes[cand][:, None]
    ) & windows.mask
    last_hours = np.where(hist_len > 0, windows.hours[:, -1], np.nan)
    since_last = np.where(hist_len > 0, hours - last_hours, 24.0 * 365)
    u_imp, u_clk = _zero_nan(user_counts[0]), _zero_nan(user_counts[1])
    i_imp, i_clk = _zero_nan(item_counts[0]), _zero_nan(item_counts[1])
    age = hours - ctx.published_hours[cand]
    dense = np.stack(
        [
            _log1p(u_imp),
            _log1p(u_clk),
            (u_clk + 1.0) / (u_imp + 10.0),  # smoothed towards 10%: a new user is not 0% or 100%
            _log1p(i_imp),
            _log1p(i_clk),
            (i_clk + 1.0) / (i_imp + 10.0),
            _log1p(np.nan_to_num(age, nan=24.0 * 365)),
            np.log1p(hist_len),
            _log1p(since_last),
            two_tower,
            same_cat.sum(1) / np.maximum(hist_len, 1),
        ],
        axis=1,
    ).astype(np.float32)
    n = len(cand)
    dwell = np.zeros(n) if dwell is None else dwell
    label = np.zeros(n, dtype=np.float32) if label is None else label
    return PairInputs(
        candidate=cand,
        windows=windows,
        user_vec=user_vec,
        dense=dense,
        user_group=np.asarray(user_group, dtype=np.int64),
        region=np.asarray(region, dtype=np.int64),
        position=np.zeros(n, dtype=np.int64) if position is None else position,
        label=label,
        weight=np.where(label > 0, 1.0 + np.log1p(np.clip(dwell, 0, None)) / 4.0, 1.0).astype(np.float32),
    )


def catalog_positions(item_ids: pd.Series | np.ndarray, item_index: Mapping[str, int]) -> np.ndarray:
    """Catalog positions of ``item_ids`` (-1 where unknown), by one hash join instead of a loop."""
    lookup = pd.Series(np.fromiter(item_index.values(), dtype=np.int64, count=len(item_index)),
                       index=pd.Index(list(item_index.keys()), dtype=object))  # fmt: skip
    found = lookup.index.get_indexer(pd.Index(np.asarray(item_ids, dtype=object)))
    return np.where(found >= 0, lookup.to_numpy()[found], -1).astype(np.int64)


def samples_to_pairs(samples: pd.DataFrame, item_index: Mapping[str, int]) -> pd.DataFrame:
    """``marts.training_samples`` rows as pair rows (catalog position, hours); rows of unknown items dropped."""
    pairs = samples.assign(
        item_idx=catalog_positions(samples["item_id"], item_index),
        hours=to_hours(samples["event_ts"]) if len(samples) else np.zeros(0),
    )
    return pairs[pairs["item_idx"] >= 0].reset_index(drop=True)


def pair_context(
    data: RecData, encoder: TwoTowerRetriever, cold_interest_weight: float, popularity: np.ndarray
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


def ranking_groups(pairs: pd.DataFrame) -> np.ndarray:
    """The lists valid NDCG ranks: requests, except one-item requests, grouped per user and day instead.

    Rating-only data (MovieLens) makes each rating its own one-item request; ranked alone, every such list has
    NDCG 1 and early stopping would see no change. ``training_samples`` samples those rows within the user's
    session, so the user's rated items of a day are ranked together (liked ones above disliked ones).
    """
    request = pairs["request_id"].astype(str)
    single = request.map(request.value_counts()) == 1
    ts = pd.to_datetime(pairs["event_ts"])
    if ts.dt.tz is None and not ts.isna().any():
        days = pd.Series(np.datetime_as_string(ts.to_numpy().astype("datetime64[D]")), index=pairs.index)
    else:
        days = ts.dt.strftime("%Y-%m-%d")
    user_day = "user|" + pairs["user_id"].astype(str) + "|" + days
    return request.where(~single, user_day).to_numpy()


_DAY_KEY = 1_000_000  # item position * _DAY_KEY + day number: one sortable key per (item, day)


def _day_numbers(ts: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 of each timestamp (the calendar day dbt's event_date holds)."""
    return (pd.to_datetime(ts).to_numpy().astype("datetime64[D]").astype(np.int64)).astype(np.int64)


def prior_item_counts(
    interactions: pd.DataFrame, item_index: Mapping[str, int], items: np.ndarray, days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks of catalog ``items`` on the whole days before ``days`` (as training_samples has)."""
    idx = catalog_positions(interactions["item_id"], item_index)
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
    published = np.nan_to_num(to_hours(data.items["published_at"]), nan=-np.inf)
    rng = np.random.default_rng(seed)
    n_items = data.n_items
    # every positive draws 4 x per_positive items (one (rows, draws) array: the same stream as a draw per row);
    # it keeps, in draw order, each item's first draw that the user had no impression of and that was out by
    # the positive's time, up to per_positive of them
    draws = rng.integers(0, n_items, size=(len(rows), 4 * per_positive))
    user_codes, _ = pd.factorize(
        np.concatenate(
            [before["user_id"].to_numpy(dtype=object), pairs["user_id"].to_numpy(dtype=object)[rows]]
        )
    )
    shown_items = catalog_positions(before["item_id"], data.item_index)
    known = shown_items >= 0
    shown = np.unique(user_codes[: len(before)][known].astype(np.int64) * n_items + shown_items[known])
    keys = user_codes[len(before) :].astype(np.int64)[:, None] * n_items + draws
    at = np.searchsorted(shown, keys)
    seen = (
        (at < len(shown)) & (shown[np.minimum(at, max(len(shown) - 1, 0))] == keys)
        if len(shown)
        else keys < 0
    )
    by_value = np.argsort(draws, axis=1, kind="stable")
    sorted_draws = np.take_along_axis(draws, by_value, axis=1)
    repeat = np.zeros_like(draws, dtype=bool)
    np.put_along_axis(
        repeat,
        by_value,
        np.c_[np.zeros(len(rows), dtype=bool), sorted_draws[:, 1:] == sorted_draws[:, :-1]],
        axis=1,
    )
    keep = ~repeat & ~seen & (published[draws] <= pairs["hours"].to_numpy(np.float64)[rows][:, None])
    keep &= np.cumsum(keep, axis=1) <= per_positive
    hit_row, hit_col = np.nonzero(keep)  # row-major: positives in order, draws in order within each
    source = rows[hit_row].astype(np.int64)
    items = draws[hit_row, hit_col].astype(np.int64)
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


def ranker_vocabulary(data: RecData) -> dict[str, list[str]]:
    """The pair ranker's categorical vocabularies (items, categories, creator and user groups, regions)."""
    return {
        "item": data.items["item_id"].tolist(),
        "category": sorted(data.items["category"].dropna().unique().tolist()),
        "creator_group": sorted(data.items["creator_group"].dropna().unique().tolist()),
        "user_group": sorted(data.users["user_group"].dropna().astype(str).unique().tolist()),
        "region": sorted(data.users["region"].dropna().astype(str).unique().tolist()),
    }


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
    best_state: dict[str, torch.Tensor] | None = None
    best_score, since_best = -math.inf, 0
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
        if score > best_score:
            best_score, since_best = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= cfg.patience:
                progress.finish(f"early stop: no valid gain for {cfg.patience} epochs")
                break
    progress.finish()
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


# --- the stacked ranker over multi-source candidates (the full stack's ranking stage) --------------------------
#
# Time-based stacking: the candidate sources are fitted on the view as of a cutoff, every feature is computed as
# of that cutoff, and the labels are the next window's engagements with items the user had not seen (exactly the
# target the full stack is evaluated on). Training windows end at the valid split's end; at test the same
# features are computed as of the test split's start from sources refitted on everything before it.

ITEM_FEATURES = [
    "log_share_engaged_1d", "log_share_engaged_7d", "log_share_engaged_28d", "log_share_engaged_all",
    "log_rated_all",
    "mean_rating_smoothed", "log_days_since_first_event", "log_days_since_last_engagement",
    "log_days_since_published", "log_newcomer_share",
]  # fmt: skip
NEWCOMER_DAYS = 1.0  # an engagement within this many days of its user's first event is a newcomer's
NEWCOMER_HALF_LIFE_DAYS = 7.0  # recency weight of those engagements in log_newcomer_share
USER_FEATURES = ["log_history_length", "log_days_since_last_event", "log_engaged_7d_user"]
CROSS_FEATURES = [
    "text_cos_recent", "text_cos_history", "text_max_cos_last5", "category_share", "log_group_share_28d",
]  # fmt: skip
GROUP_COLUMN = "user_group"  # the user attribute whose members' recent engagements form log_group_share_28d
STACK_HISTORY = 50  # history items the ranker's attention reads


def stack_feature_names(sources: list[str]) -> list[str]:
    """Column names of :attr:`StackExamples.dense` for candidate sources ``sources``."""
    per_source = [f"{s}_{kind}" for s in sources for kind in ("score", "log_rank", "proposed")]
    return per_source + ITEM_FEATURES + USER_FEATURES + CROSS_FEATURES


@dataclass
class StackExamples:
    """One list per user: candidate features as of a cutoff, the history the attention reads, and labels."""

    user_ids: list[str]
    items: np.ndarray  # (U, C) catalog positions, -1 = padding
    mask: np.ndarray  # (U, C)
    dense: np.ndarray  # (U, C, F)
    history: np.ndarray  # (U, L) catalog positions of the last STACK_HISTORY engagements, -1 = padding
    labels: np.ndarray  # (U, C) 1 where the candidate is engaged with in the label window

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, rows: np.ndarray) -> StackExamples:
        """The users at ``rows``."""
        return StackExamples(
            [self.user_ids[r] for r in rows], self.items[rows], self.mask[rows], self.dense[rows],
            self.history[rows], self.labels[rows],
        )  # fmt: skip


def _log1p_days(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(np.nan_to_num(x, nan=3650.0), 0, None))


def point_in_time_item_features(view: RecData) -> np.ndarray:
    """(items, len(ITEM_FEATURES)) as of ``view.now``: engagements in recent windows, ratings, ages."""
    now = view.now
    n = view.n_items
    h = view.histories
    h_idx = view.item_idx(h["item_id"])
    h_age = ((now - h["event_ts"]) / pd.Timedelta(days=1)).to_numpy(float)
    inter = view.interactions
    i_idx = view.item_idx(inter["item_id"])
    ok = i_idx >= 0
    i_idx, inter_ts = i_idx[ok], inter["event_ts"].to_numpy()[ok]
    ratings = inter["rating"].to_numpy(float)[ok]

    def count(window_days: float) -> np.ndarray:
        """log share of the window's engagements: activity levels differ between windows, shares less so."""
        keep = (h_idx >= 0) & (h_age < window_days)
        counts = np.bincount(h_idx[keep], minlength=n).astype(float)
        return np.log((counts + 0.1) / (counts.sum() + 1.0))

    rated = ~np.isnan(ratings)
    n_rated = np.bincount(i_idx[rated], minlength=n).astype(float)
    sum_rated = np.bincount(i_idx[rated], weights=ratings[rated], minlength=n)
    global_mean = float(ratings[rated].mean()) if rated.any() else 0.0
    first = pd.Series(inter_ts).groupby(i_idx).min() if len(i_idx) else pd.Series(dtype="datetime64[ns]")
    since_first = np.full(n, np.nan)
    since_first[first.index.to_numpy()] = ((now - first) / pd.Timedelta(days=1)).to_numpy(float)
    last = pd.Series(h_age).groupby(h_idx).min() if len(h_idx) else pd.Series(dtype=float)
    since_last = np.full(n, np.nan)
    since_last[last.index.to_numpy()[last.index.to_numpy() >= 0]] = last[last.index >= 0].to_numpy()
    published = ((now - view.items["published_at"]) / pd.Timedelta(days=1)).to_numpy(float)
    return np.stack(
        [
            count(1.0), count(7.0), count(28.0), count(np.inf),
            np.log1p(n_rated), (sum_rated + 5.0 * global_mean) / (n_rated + 5.0),
            _log1p_days(since_first), _log1p_days(since_last), _log1p_days(published), newcomer_share(view),
        ],
        axis=1,
    ).astype(np.float32)  # fmt: skip


def newcomer_share(view: RecData) -> np.ndarray:
    """(items,) log share of each item among newcomers' engagements as of ``view.now``, recency-weighted.

    A newcomer's engagement is one made within ``NEWCOMER_DAYS`` of the user's first event; each is weighted by
    0.5 ** (age / ``NEWCOMER_HALF_LIFE_DAYS``). Users with no history at a cutoff are about half of ml-100k's
    test users, and what the last newcomers engaged with (the sign-up flow's movies) predicts what the next
    ones will better than what everyone engaged with lately.
    """
    h = view.histories
    if not len(h):
        return np.full(view.n_items, np.log(0.01), dtype=np.float64)
    first = view.interactions.groupby("user_id")["event_ts"].min()
    since_first = (h["event_ts"] - h["user_id"].map(first).fillna(h["event_ts"])) / pd.Timedelta(days=1)
    new = h[since_first.to_numpy(float) < NEWCOMER_DAYS]
    idx = view.item_idx(new["item_id"])
    age = ((view.now - new["event_ts"]) / pd.Timedelta(days=1)).to_numpy(float)
    ok = idx >= 0
    weights = np.bincount(
        idx[ok], weights=0.5 ** (np.clip(age[ok], 0, None) / NEWCOMER_HALF_LIFE_DAYS), minlength=view.n_items
    )
    return np.log((weights + 0.01) / (weights.sum() + 1.0))


@dataclass
class GroupShare:
    """Log share of each item among the last days' engagements of each user group (the last row: everyone's)."""

    table: np.ndarray  # (groups + 1, items)
    lookup: dict[object, int]  # group value -> row

    def rows(self, view: RecData, users: Sequence[str]) -> np.ndarray:
        """Each user's row of :attr:`table` (the last one for users without the attribute)."""
        has = GROUP_COLUMN in view.users.columns
        groups = view.users.set_index("user_id")[GROUP_COLUMN] if has else pd.Series(dtype=object)
        user_groups = pd.Series(list(users), dtype=object).map(groups)
        fallback = len(self.table) - 1
        return np.asarray([self.lookup.get(g, fallback) for g in user_groups], dtype=np.int64)


def group_share(view: RecData, days: float = 28.0) -> GroupShare:
    """The :class:`GroupShare` of ``view`` as of its end.

    The groups are the users' ``GROUP_COLUMN`` attribute (the age band on MovieLens). Cold-start users have no
    history, but their group's taste is known.
    """
    h = view.histories
    recent = h[(view.now - h["event_ts"]) < pd.Timedelta(days=days)]
    idx = view.item_idx(recent["item_id"])
    has = GROUP_COLUMN in view.users.columns
    groups = view.users.set_index("user_id")[GROUP_COLUMN] if has else pd.Series(dtype=object)
    codes, uniques = pd.factorize(recent["user_id"].map(groups))  # -1 where the group is unknown
    n_groups = len(uniques)
    counts = np.zeros((n_groups + 1, view.n_items))
    ok = (codes >= 0) & (idx >= 0)
    np.add.at(counts, (codes[ok], idx[ok]), 1.0)
    np.add.at(counts[n_groups], idx[idx >= 0], 1.0)
    table = np.log((counts + 0.1) / (counts.sum(1, keepdims=True) + 1.0)).astype(np.float32)
    return GroupShare(table, {g: k for k, g in enumerate(uniques)})


def _list_zscore(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(U, C, F) values standardized over each row's real candidates (0 on padding)."""
    m = mask[..., None].astype(np.float32)
    n = np.clip(m.sum(1, keepdims=True), 1, None)
    mean = (values * m).sum(1, keepdims=True) / n
    std = np.sqrt((((values - mean) * m) ** 2).sum(1, keepdims=True) / n)
    return np.where(m > 0, (values - mean) / np.clip(std, 1e-6, None), 0.0).astype(np.float32)


def build_stack_examples(
    view: RecData, cands: CandidateSet, labels: Mapping[str, set[int]] | None = None,
    item_features: np.ndarray | None = None, shares: GroupShare | None = None,
) -> StackExamples:  # fmt: skip
    """Features of ``cands`` as of ``view.now`` (and labels from ``labels``, the next window's relevant items).

    User features read only the listed users' rows of ``view``; ``item_features`` (``point_in_time_item_features``)
    and ``shares`` (``group_share``) of the whole view let a caller pass a view of just those users' rows
    (serving).
    """
    users = cands.user_ids
    n_users, width = cands.items.shape
    history = view.history_idx()
    hist = np.full((n_users, STACK_HISTORY), -1, dtype=np.int64)
    for r, u in enumerate(users):
        seq = history.get(u, np.zeros(0, dtype=np.int64))[-STACK_HISTORY:]
        if len(seq):
            hist[r, -len(seq) :] = seq
    hist_mask = hist >= 0
    hist_len = np.asarray([len(history.get(u, ())) for u in users], dtype=float)
    last_event = view.interactions.groupby("user_id")["event_ts"].max()
    since_last = ((view.now - pd.Series(users).map(last_event)) / pd.Timedelta(days=1)).to_numpy(float)
    h = view.histories
    recent = h[(view.now - h["event_ts"]) < pd.Timedelta(days=7)]["user_id"].value_counts()
    recent_user = pd.Series(users).map(recent).fillna(0).to_numpy(float)
    user_feats = np.stack([np.log1p(hist_len), _log1p_days(since_last), np.log1p(recent_user)], axis=1)
    item_feats = point_in_time_item_features(view) if item_features is None else item_features
    cand = np.where(cands.mask, cands.items, 0)
    text = view.item_text / np.clip(np.linalg.norm(view.item_text, axis=1, keepdims=True), 1e-12, None)
    text = text.astype(np.float32)
    hist_text = np.where(hist_mask[..., None], text[np.where(hist_mask, hist, 0)], 0.0)

    def mean_text(cols: slice) -> np.ndarray:
        m = hist_mask[:, cols, None]
        v = (hist_text[:, cols] * m).sum(1) / np.clip(m.sum(1), 1, None)
        return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)

    cand_text = text[cand]  # (U, C, T)
    cos_recent = np.einsum("uct,ut->uc", cand_text, mean_text(slice(-10, None)))
    cos_all = np.einsum("uct,ut->uc", cand_text, mean_text(slice(None)))
    last5 = np.einsum("uct,ult->ucl", cand_text, hist_text[:, -5:])
    last5 = np.where(hist_mask[:, None, -5:], last5, -1.0).max(-1)
    last5 = np.where(hist_mask[:, -5:].any(1)[:, None], last5, 0.0)
    codes, _ = pd.factorize(view.items["category"].fillna(""))
    n_cat = int(codes.max()) + 1 if len(codes) else 1
    cat_counts = np.zeros((n_users, n_cat))
    rows = np.repeat(np.arange(n_users), STACK_HISTORY)[hist_mask.ravel()]
    np.add.at(cat_counts, (rows, codes[hist[hist_mask]]), 1.0)
    cat_share = np.take_along_axis(cat_counts, codes[cand], axis=1) / np.maximum(hist_len, 1)[:, None]
    shares = group_share(view, 28.0) if shares is None else shares
    group_shares = shares.table[shares.rows(view, users)[:, None], cand]
    per_source = np.stack(
        [cands.scores, np.log(cands.ranks.clip(min=1).astype(np.float32)), cands.proposed.astype(np.float32)],
        axis=-1,
    ).reshape(n_users, width, -1)
    dense = np.concatenate(
        [
            per_source,
            item_feats[cand],
            np.broadcast_to(user_feats[:, None, :], (n_users, width, user_feats.shape[1])),
            np.stack([cos_recent, cos_all, last5, cat_share, group_shares], axis=-1),
        ],
        axis=-1,
    ).astype(np.float32)
    dense[~cands.mask] = 0.0
    # item and cross features z-scored within each user's list: their levels drift between cutoffs (catalog
    # ages, counts and history lengths grow), while the order within a list is what a listwise ranker uses
    first = per_source.shape[-1]
    cols = np.r_[first : first + len(ITEM_FEATURES), dense.shape[-1] - len(CROSS_FEATURES) : dense.shape[-1]]
    dense[..., cols] = _list_zscore(dense[..., cols], cands.mask)
    label = np.zeros((n_users, width), dtype=np.float32)
    if labels is not None:
        for r, u in enumerate(users):
            rel = labels.get(u)
            if rel:
                label[r] = np.isin(cands.items[r], list(rel)) & cands.mask[r]
    return StackExamples(list(users), cands.items, cands.mask, dense, hist, label)


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
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "ranker_weights.pt")
        (path / "ranker_config.json").write_text(
            json.dumps(
                {
                    "settings": self.cfg.model_dump(),
                    "sources": self.sources,
                    "features": self.feature_names,
                    "text_dim": int(self._text.shape[1]),
                }
            )
        )

    @classmethod
    def load(cls, path: Path, item_text: np.ndarray, device: str = "cpu") -> StackedRanker:
        """Load what :meth:`save` wrote (``item_text``: the catalog it will score)."""
        config = json.loads((path / "ranker_config.json").read_text())
        cfg = RankerSettings(**config["settings"])
        model = ListwiseRanker(len(config["features"]), config["text_dim"], cfg)
        model.load_state_dict(torch.load(path / "ranker_weights.pt", map_location=device, weights_only=True))
        return cls(model, config["sources"], cfg, item_text, device, features=config["features"])


def listwise_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each user's candidates, the positives sharing the target mass (ListNet)."""
    n_pos = labels.sum(1)
    keep = n_pos > 0
    log_p = torch.log_softmax(logits[keep], dim=1).clamp(min=-1e4)
    target = labels[keep] / n_pos[keep, None]
    return -(target * log_p).sum(1).mean()


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
    best_state, best_score, since_best = None, -math.inf, 0
    with EpochProgress("stacked ranker", total=n_epochs, log=log) as progress:
        for epoch in range(n_epochs):
            model.train()
            t0 = time.perf_counter()
            losses = []
            order = rng.permutation(users_with_positives)
            for s in range(0, len(order), cfg.stack_batch_users):
                batch = train.take(order[s : s + cfg.stack_batch_users])
                loss = listwise_loss(ranker._logits(batch), torch.as_tensor(batch.labels, device=device))
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
            if score > best_score:
                best_score, since_best = score, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
                if since_best >= cfg.patience:
                    progress.finish(f"early stop: no valid gain for {cfg.patience} epochs")
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return ranker, pd.DataFrame(rows)


def concat_examples(parts: Sequence[StackExamples]) -> StackExamples:
    """Lists of several windows in one set (padded to the widest)."""
    width = max(p.items.shape[1] for p in parts)

    def pad(a: np.ndarray, value: float) -> np.ndarray:
        extra = width - a.shape[1]
        if extra == 0:
            return a
        return np.concatenate([a, np.full((a.shape[0], extra, *a.shape[2:]), value, dtype=a.dtype)], axis=1)

    return StackExamples(
        [u for p in parts for u in p.user_ids],
        np.concatenate([pad(p.items, -1) for p in parts]),
        np.concatenate([pad(p.mask, False) for p in parts]),
        np.concatenate([pad(p.dense, 0.0) for p in parts]),
        np.concatenate([p.history for p in parts]),
        np.concatenate([pad(p.labels, 0.0) for p in parts]),
    )


class GBDTStackedRanker:
    """LightGBM lambdarank over the same stacking lists (a comparison point to :class:`StackedRanker`).

    Reads :attr:`StackExamples.dense` only (no attention over the history: the text similarities are among the
    dense features). Selected by ``ranker.stack_model = "lightgbm"``; ``lightgbm`` is imported only then.
    """

    def __init__(self, booster: Any, sources: list[str], cfg: RankerSettings, iterations: int) -> None:
        self.booster = booster
        self.sources = sources
        self.cfg = cfg
        self.iterations = iterations

    @property
    def feature_names(self) -> list[str]:
        return stack_feature_names(self.sources)

    def set_catalog(self, item_text: np.ndarray) -> None:
        """Nothing to index: the trees read the dense features only."""

    def score(self, examples: StackExamples, batch_size: int = 0) -> np.ndarray:
        """(users, width) relevance scores, -inf on padding."""
        out = np.full(examples.items.shape, -np.inf, dtype=np.float32)
        if examples.mask.any():
            out[examples.mask] = self.booster.predict(
                examples.dense[examples.mask], num_iteration=self.iterations
            )
        return out

    def save(self, path: Path) -> None:
        """Write the booster (text model file) and the schema into ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path / "ranker_gbdt.txt"), num_iteration=self.iterations)
        (path / "ranker_config.json").write_text(
            json.dumps(
                {
                    "model": "lightgbm",
                    "settings": self.cfg.model_dump(),
                    "sources": self.sources,
                    "features": self.feature_names,
                    "iterations": self.iterations,
                }
            )
        )

    @classmethod
    def load(cls, path: Path) -> GBDTStackedRanker:
        """Load what :meth:`save` wrote."""
        import lightgbm

        config = json.loads((path / "ranker_config.json").read_text())
        booster = lightgbm.Booster(model_file=str(path / "ranker_gbdt.txt"))
        return cls(booster, config["sources"], RankerSettings(**config["settings"]), config["iterations"])


def train_gbdt_ranker(
    train: StackExamples,
    valid: StackExamples,
    valid_relevant: Mapping[str, set[int]],
    sources: list[str],
    cfg: RankerSettings,
    seed: int,
) -> tuple[GBDTStackedRanker, pd.DataFrame]:
    """Fit LightGBM lambdarank on the training lists; the iteration count of best valid NDCG@10 is kept."""
    import lightgbm

    keep = train.labels.sum(1) > 0  # lists without a positive carry no ranking signal
    x, y = train.dense[keep][train.mask[keep]], train.labels[keep][train.mask[keep]]
    params = {
        "objective": "lambdarank", "learning_rate": cfg.stack_gbdt_learning_rate,
        "num_leaves": cfg.stack_gbdt_leaves, "min_data_in_leaf": cfg.stack_gbdt_min_leaf,
        "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambdarank_truncation_level": 20,
        "verbose": -1, "seed": seed, "num_threads": 1,
    }  # fmt: skip
    data = lightgbm.Dataset(x, y, group=train.mask[keep].sum(1))
    t0 = time.perf_counter()
    booster = lightgbm.train(params, data, num_boost_round=cfg.stack_gbdt_rounds)
    rows = []
    step = 10
    with EpochProgress("gbdt ranker", total=cfg.stack_gbdt_rounds // step, log=log) as progress:
        for it in range(step, cfg.stack_gbdt_rounds + 1, step):
            ranker = GBDTStackedRanker(booster, sources, cfg, it)
            score = stacked_ndcg(ranker, valid, valid_relevant)  # type: ignore[arg-type]
            rows.append({"epoch": it, "valid_ndcg@10": score, "seconds": time.perf_counter() - t0})
            progress.step(valid_ndcg10=score)
    frame = pd.DataFrame(rows)
    best = int(frame.loc[frame["valid_ndcg@10"].idxmax(), "epoch"])
    return GBDTStackedRanker(booster, sources, cfg, best), frame
