"""Point-in-time inputs of the pair ranker: one (user, candidate) pair's history window, dense counts and cross features."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from models.history import HistoryStore, HistoryWindows, to_hours
from models.recdata import RecData
from models.retrieval.index import ItemSpace
from models.retrieval.two_tower import ColdStart, TwoTowerRetriever, user_vectors_at

if TYPE_CHECKING:
    from models.ranking.pair_ranker import Ranker


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
