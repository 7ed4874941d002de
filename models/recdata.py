"""The marts the ML stack reads, held together with the catalog index every model shares.

One :class:`RecData` holds the dbt marts (``marts.*``) and the item text embeddings, aligned on one catalog
order (``items`` sorted by ``item_id``; row ``i`` of ``item_text`` is item ``i``). ``as_of(cutoff)`` gives the
same catalog with every event at or after ``cutoff`` removed: that is the "train view" every model is fitted on
and the history it recommends from, so no model can see the window it is evaluated on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

CREATOR_ATTRIBUTE = "creator_group"  # the item attribute exposure fairness is measured over
UNKNOWN = "unknown"  # the value of a missing user or item attribute

MART_COLUMNS: dict[str, list[str]] = {
    "interactions": [
        "request_id", "user_id", "item_id", "event_ts", "event_date", "position", "clicked",
        "dwell_seconds", "rating", "split",
    ],
    "split_boundaries": ["split", "starts_at", "ends_at"],
    "user_histories": ["user_id", "item_id", "event_ts", "split", "seq", "dwell_seconds", "rating"],
    "user_features": [
        "user_id", "user_group", "region", "preferred_style", "declared_interests", "n_impressions",
        "n_clicks", "ctr", "avg_dwell_seconds", "n_ratings", "avg_rating", "last_event_ts", "top_category",
    ],
    "item_features": [
        "item_id", "title", "body", "category", "tags", "creator_id", "creator_group", "published_at",
        "content_hash", "n_impressions", "n_clicks", "ctr", "avg_dwell_seconds", "popularity",
    ],
    "training_samples": [
        "request_id", "user_id", "item_id", "event_ts", "event_date", "position", "label", "dwell_seconds",
        "split", "user_prior_impressions", "user_prior_clicks", "user_prior_ctr", "item_prior_impressions",
        "item_prior_clicks", "item_prior_ctr", "item_age_hours", "features_as_of",
    ],
}  # fmt: skip

# Columns a mart may lack (a warehouse built before they were added): read when present, else null.
OPTIONAL_MART_COLUMNS: dict[str, list[str]] = {"user_features": ["gender", "occupation"]}

# The user attributes reports group users by (null or missing ones make the group 'unknown').
USER_ATTRIBUTES = ("user_group", "region", "gender", "occupation")

SPLITS = ("train", "valid", "test")


def split_list(value: object) -> list[str]:
    """'a|b' -> ['a', 'b'] (None / NaN / '' -> [])."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [part.strip() for part in str(value).split("|") if part.strip()]


def exclusion_lists(
    history: Mapping[str, np.ndarray], unpublished: np.ndarray, user_ids: Sequence[str]
) -> list[np.ndarray]:
    """Per user, the catalog positions never to recommend: their ``history`` and every unpublished item."""
    empty = np.zeros(0, dtype=np.int64)
    return [np.union1d(history.get(u, empty), unpublished).astype(np.int64) for u in user_ids]


def merge_item_sets(*sets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per user, the union of the catalog positions in every mapping."""
    empty = np.zeros(0, dtype=np.int64)
    users = dict.fromkeys(u for m in sets for u in m)
    return {u: np.unique(np.concatenate([m.get(u, empty) for m in sets])).astype(np.int64) for u in users}


@dataclass
class RecData:
    """The marts plus item text embeddings on one catalog index, optionally cut at ``cutoff``."""

    items: pd.DataFrame
    users: pd.DataFrame
    histories: pd.DataFrame
    interactions: pd.DataFrame
    samples: pd.DataFrame
    boundaries: pd.DataFrame
    item_text: np.ndarray
    cutoff: pd.Timestamp | None = None
    item_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.item_index = {item_id: i for i, item_id in enumerate(self.items["item_id"])}

    @classmethod
    def from_frames(cls, frames: Mapping[str, pd.DataFrame], item_embeddings: pd.DataFrame) -> RecData:
        """Build from mart frames keyed by mart name and an ``item_id, embedding`` frame."""
        missing = {
            name: sorted(set(cols) - set(frames[name].columns))
            for name, cols in MART_COLUMNS.items()
            if name in frames and set(cols) - set(frames[name].columns)
        }
        absent = [name for name in MART_COLUMNS if name not in frames]
        if missing or absent:
            raise ValueError(f"marts do not match the contract: missing tables {absent}, columns {missing}")
        frames = dict(frames)
        for name, optional in OPTIONAL_MART_COLUMNS.items():
            absent_optional = [c for c in optional if c not in frames[name].columns]
            if absent_optional:
                frames[name] = frames[name].assign(**dict.fromkeys(absent_optional))
        items = frames["item_features"].sort_values("item_id").reset_index(drop=True)
        items["published_at"] = pd.to_datetime(items["published_at"])
        emb = dict(zip(item_embeddings["item_id"], item_embeddings["embedding"], strict=True))
        dim = len(next(iter(emb.values()))) if emb else 1
        text = np.zeros((len(items), dim), dtype=np.float32)
        for i, item_id in enumerate(items["item_id"]):
            if (
                item_id in emb
            ):  # an item without an embedding keeps a zero vector (id and category still work)
                text[i] = np.asarray(emb[item_id], dtype=np.float32)
        histories = frames["user_histories"].copy()
        histories["event_ts"] = pd.to_datetime(histories["event_ts"])
        histories = histories[histories["item_id"].isin(set(items["item_id"]))]
        histories = histories.sort_values(["user_id", "event_ts", "seq"], kind="stable").reset_index(
            drop=True
        )
        interactions = frames["interactions"].copy()
        interactions["event_ts"] = pd.to_datetime(interactions["event_ts"])
        samples = frames["training_samples"].copy()
        samples["event_ts"] = pd.to_datetime(samples["event_ts"])
        boundaries = frames["split_boundaries"].copy()
        for col in ("starts_at", "ends_at"):
            boundaries[col] = pd.to_datetime(boundaries[col])
        return cls(
            items=items,
            users=frames["user_features"].sort_values("user_id").reset_index(drop=True),
            histories=histories,
            interactions=interactions,
            samples=samples,
            boundaries=boundaries,
            item_text=text,
        )

    @property
    def n_items(self) -> int:
        return len(self.items)

    def split_start(self, split: str) -> pd.Timestamp:
        """First timestamp of ``split``."""
        return pd.Timestamp(self.boundaries.set_index("split").loc[split, "starts_at"])

    def split_end(self, split: str) -> pd.Timestamp:
        """Exclusive end of ``split``."""
        return pd.Timestamp(self.boundaries.set_index("split").loc[split, "ends_at"])

    @property
    def now(self) -> pd.Timestamp:
        """The moment the view describes: the cutoff, else the end of the last split."""
        return self.cutoff if self.cutoff is not None else pd.Timestamp(self.boundaries["ends_at"].max())

    def as_of(self, cutoff: pd.Timestamp) -> RecData:
        """The same catalog and users with only the events strictly before ``cutoff``."""
        cutoff = pd.Timestamp(cutoff)
        return replace(
            self,
            histories=self.histories[self.histories["event_ts"] < cutoff].reset_index(drop=True),
            interactions=self.interactions[self.interactions["event_ts"] < cutoff].reset_index(drop=True),
            samples=self.samples[self.samples["event_ts"] < cutoff].reset_index(drop=True),
            cutoff=cutoff,
        )

    def item_idx(self, item_ids: pd.Series | list[str]) -> np.ndarray:
        """Catalog positions of ``item_ids`` (-1 for ids outside the catalog)."""
        return np.asarray([self.item_index.get(i, -1) for i in item_ids], dtype=np.int64)

    def history_idx(self) -> dict[str, np.ndarray]:
        """Each user's positive engagements as catalog positions in time order."""
        idx = self.item_idx(self.histories["item_id"])
        return {
            user: idx[rows] for user, rows in self.histories.groupby("user_id", sort=False).indices.items()
        }

    def rated_idx(self) -> dict[str, np.ndarray]:
        """Each user's rated items as catalog positions, clicked or not.

        A rating says the user consumed the item even without a click: MovieLens ratings below the click
        threshold are impressions without a click, and recommending such a movie back would be a repeat.
        """
        rated = self.interactions[self.interactions["rating"].notna()]
        idx = self.item_idx(rated["item_id"])
        return {
            user: np.unique(idx[rows]) for user, rows in rated.groupby("user_id", sort=False).indices.items()
        }

    def seen_idx(self) -> dict[str, np.ndarray]:
        """Per user, the items never recommended back: engaged with or rated in this view."""
        return merge_item_sets(self.history_idx(), self.rated_idx())

    def unpublished(self) -> np.ndarray:
        """Catalog positions of items published at or after ``now``: no model may recommend them yet."""
        published = self.items["published_at"]
        return np.flatnonzero((published >= self.now).fillna(False).to_numpy())

    def exclusions(self, user_ids: list[str]) -> list[np.ndarray]:
        """Per user, the items never to recommend: engaged with or rated in this view, or not yet published."""
        return exclusion_lists(self.seen_idx(), self.unpublished(), user_ids)

    def relevant(self, split: str) -> dict[str, set[int]]:
        """Items each user engaged with in ``split`` that a model could recommend at its start.

        Left out: items the user engaged with or rated before the split (never recommended back) and items
        published during the split (not in the catalog yet when the recommendations are made).
        """
        start = self.split_start(split)
        view = self.as_of(start)
        window = self.histories[self.histories["split"] == split]
        users = [str(u) for u in window["user_id"].unique()]
        # the same exclusion set every model gets at the split's start (one builder: exclusion_lists)
        excluded = dict(zip(users, exclusion_lists(view.seen_idx(), view.unpublished(), users), strict=True))
        out: dict[str, set[int]] = {}
        for user, item_ids in window.groupby("user_id")["item_id"]:
            idx = self.item_idx(item_ids)
            keep = set(idx[(idx >= 0) & ~np.isin(idx, excluded[str(user)])].tolist())
            if keep:
                out[str(user)] = keep
        return out

    def item_popularity(self) -> np.ndarray:
        """Positive engagements per catalog item in this view."""
        counts = np.zeros(self.n_items, dtype=np.float64)
        np.add.at(counts, self.item_idx(self.histories["item_id"]), 1.0)
        return counts

    def user_rows(self) -> dict[str, dict[str, object]]:
        """``marts.user_features`` rows keyed by user id."""
        return self.users.set_index("user_id", drop=False).to_dict(orient="index")


def write_frame(
    con: duckdb.DuckDBPyConnection, qualified_name: str, frame: pd.DataFrame, list_columns: Sequence[str] = ()
) -> None:
    """Replace table ``schema.name`` with ``frame``; ``list_columns`` hold vectors and become FLOAT[] columns."""
    schema = qualified_name.split(".")[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    table = pa.Table.from_pandas(frame.drop(columns=list(list_columns)), preserve_index=False)
    for column in list_columns:
        vectors = [np.asarray(v, dtype=np.float32) for v in frame[column]]
        offsets = np.concatenate([[0], np.cumsum([len(v) for v in vectors])]).astype(np.int32)
        flat = np.concatenate(vectors) if vectors else np.zeros(0, dtype=np.float32)
        table = table.append_column(column, pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)))
    table = table.select(list(frame.columns))
    con.register("_recgen_frame", table)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {qualified_name} AS SELECT * FROM _recgen_frame")
    finally:
        con.unregister("_recgen_frame")
