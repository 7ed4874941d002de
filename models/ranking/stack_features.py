"""Point-in-time examples of the stacked ranker: per user, the candidate sources' scores and ranks beside item, user and cross features as of a cutoff."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.recdata import RecData
from models.retrieval.candidates import CandidateSet

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
