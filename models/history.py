"""Users' time-ordered engagement histories as flat arrays, sliced into fixed-length windows for the torch models.

The profile model and the ranker both need "the last L items this user engaged with strictly before time t"
for many (user, t) pairs. Keeping every history in one array sorted by (user, time) turns each such window into
index arithmetic: ``end`` = the position of the first event at or after t, the window is ``[end - L, end)``
clipped at the user's first event. Windows are left-padded, so column ``L - 1`` is always the most recent item.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

PAD = -1  # item position of an empty history slot


def to_hours(ts: pd.Series | pd.DatetimeIndex | np.ndarray | list) -> np.ndarray:
    """Timestamps as float hours since the epoch (the unit every recency feature uses)."""
    values = pd.to_datetime(pd.Series(ts) if not isinstance(ts, pd.Series) else ts)
    return ((values - pd.Timestamp(0)) / pd.Timedelta(hours=1)).to_numpy(dtype=np.float64)


@dataclass
class HistoryWindows:
    """A batch of left-padded history windows: arrays of shape (batch, L); ``mask`` is True on real events."""

    items: np.ndarray
    mask: np.ndarray
    hours: np.ndarray
    dwell: np.ndarray
    rating: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(axis=1)

    def take(self, rows: np.ndarray) -> HistoryWindows:
        """The windows of ``rows``."""
        return HistoryWindows(
            self.items[rows], self.mask[rows], self.hours[rows], self.dwell[rows], self.rating[rows]
        )

    def trimmed(self) -> HistoryWindows:
        """Without the leading columns that are padding in every row (at least one column is kept).

        Windows are left-padded, so this keeps every event and the most-recent-last layout while attention
        costs scale with the longest history in the batch instead of ``max_history``.
        """
        longest = max(int(self.lengths.max()) if len(self.mask) else 1, 1)
        cut = self.mask.shape[1] - longest
        if cut <= 0:
            return self
        return HistoryWindows(
            *(a[:, cut:] for a in (self.items, self.mask, self.hours, self.dwell, self.rating))
        )


def length_batches(
    lengths: np.ndarray, batch_size: int, generator: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Row batches of similar history length (cheaper padding); shuffled within lengths and in batch order."""
    noise = generator.random(len(lengths)) if generator is not None else np.arange(len(lengths), dtype=float)
    order = np.lexsort((noise, lengths))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if generator is not None:
        batches = [batches[i] for i in generator.permutation(len(batches))]
    return batches


@dataclass
class HistoryStore:
    """Every user's positive engagements, concatenated in (user, time) order, with per-user offsets."""

    items: np.ndarray  # catalog positions (int64)
    hours: np.ndarray  # event time in hours since the epoch
    dwell: np.ndarray
    rating: np.ndarray  # NaN where not rated
    offsets: dict[str, tuple[int, int]]  # user -> [start, end) into the arrays

    @classmethod
    def from_frame(cls, histories: pd.DataFrame, item_index: Mapping[str, int]) -> HistoryStore:
        """Build from ``marts.user_histories``-shaped rows (items outside ``item_index`` are dropped)."""
        idx = np.asarray([item_index.get(i, -1) for i in histories["item_id"]], dtype=np.int64)
        frame = histories.assign(_idx=idx, _hours=to_hours(histories["event_ts"]) if len(histories) else 0.0)
        frame = frame[frame["_idx"] >= 0]
        sort_cols = ["user_id", "_hours"] + (["seq"] if "seq" in frame.columns else [])
        frame = frame.sort_values(sort_cols, kind="stable")
        users = frame["user_id"].to_numpy()
        offsets: dict[str, tuple[int, int]] = {}
        if len(users):
            change = np.flatnonzero(users[1:] != users[:-1]) + 1
            starts = np.concatenate([[0], change])
            ends = np.concatenate([change, [len(users)]])
            offsets = {str(users[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}
        return cls(
            items=frame["_idx"].to_numpy(np.int64),
            hours=frame["_hours"].to_numpy(np.float64),
            dwell=frame["dwell_seconds"].fillna(0).to_numpy(np.float32),
            rating=frame["rating"].astype(float).to_numpy(np.float32),
            offsets=offsets,
        )

    @classmethod
    def from_sequences(cls, sequences: Mapping[str, list[int]], hours: float) -> HistoryStore:
        """Histories given only as item positions (e.g. from a request), all stamped at ``hours``."""
        frames = [pd.DataFrame({"user_id": user, "_idx": seq}) for user, seq in sequences.items() if len(seq)]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"user_id": [], "_idx": []})
        offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for user, seq in sequences.items():
            if len(seq):
                offsets[user] = (start, start + len(seq))
                start += len(seq)
        n = len(frame)
        return cls(
            items=frame["_idx"].to_numpy(np.int64),
            hours=np.full(n, hours, dtype=np.float64),
            dwell=np.zeros(n, dtype=np.float32),
            rating=np.full(n, np.nan, dtype=np.float32),
            offsets=offsets,
        )

    def __len__(self) -> int:
        return len(self.items)

    def user_items(self, user_id: str) -> np.ndarray:
        """The user's engaged items in time order (empty when unknown)."""
        start, end = self.offsets.get(user_id, (0, 0))
        return self.items[start:end]

    def ends_before(
        self, user_ids: np.ndarray | list[str], hours: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per (user, time): the user's first offset and the offset of their first event at or after ``time``."""
        starts = np.zeros(len(user_ids), dtype=np.int64)
        ends = np.zeros(len(user_ids), dtype=np.int64)
        if len(user_ids) <= 64:  # a request's few rows: a plain loop, without a pandas groupby per call
            for row, user in enumerate(user_ids):
                start, end = self.offsets.get(str(user), (0, 0))
                starts[row] = start
                ends[row] = start + np.searchsorted(self.hours[start:end], hours[row], side="left")
            return starts, ends
        order = pd.Series(np.arange(len(user_ids))).groupby(np.asarray(user_ids)).indices
        for user, rows in order.items():
            start, end = self.offsets.get(str(user), (0, 0))
            starts[rows] = start
            ends[rows] = start + np.searchsorted(self.hours[start:end], hours[rows], side="left")
        return starts, ends

    def windows(self, starts: np.ndarray, ends: np.ndarray, length: int) -> HistoryWindows:
        """Left-padded windows ``[max(start, end - length), end)`` for each row."""
        cols = ends[:, None] - length + np.arange(length)[None, :]
        mask = cols >= starts[:, None]
        safe = np.where(mask, cols, 0)
        if len(self.items) == 0:
            mask = np.zeros_like(mask)
            safe = np.zeros_like(safe)
            empty = np.zeros(1)
            return HistoryWindows(
                items=np.full(mask.shape, PAD, dtype=np.int64),
                mask=mask,
                hours=np.broadcast_to(empty, mask.shape).copy(),
                dwell=np.zeros(mask.shape, dtype=np.float32),
                rating=np.full(mask.shape, np.nan, dtype=np.float32),
            )
        return HistoryWindows(
            items=np.where(mask, self.items[safe], PAD),
            mask=mask,
            hours=np.where(mask, self.hours[safe], 0.0),
            dwell=np.where(mask, self.dwell[safe], 0.0).astype(np.float32),
            rating=np.where(mask, self.rating[safe], np.nan).astype(np.float32),
        )

    def latest_windows(self, user_ids: list[str], length: int) -> HistoryWindows:
        """Each user's last ``length`` events."""
        starts = np.asarray([self.offsets.get(u, (0, 0))[0] for u in user_ids], dtype=np.int64)
        ends = np.asarray([self.offsets.get(u, (0, 0))[1] for u in user_ids], dtype=np.int64)
        return self.windows(starts, ends, length)
