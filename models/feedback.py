"""Feedback from the service: raw event rows, a durable JSONL inbox writer, and the freshest history.

The service answers a feedback request only after :meth:`FeedbackInbox.append` returned, and ``append``
returns only after the lines are written, ``flush``-ed and ``fsync``-ed (and, when it created the file, after
the directory entry is ``fsync``-ed too): an acknowledged event survives a SIGKILL of the server, or a power
loss, right after the answer. The files land in ``<inbox>/events/feedback-<date>-<pid>.jsonl`` in the raw
events schema (``models/data/schema.py``), where the inbox sensor picks them up and ``ingest_inbox`` validates
them like any other raw rows.

Each append opens the file by name (``O_APPEND``) and closes it again, so when the pipeline moves a file to
``inbox/processed`` the next append starts a new file the sensor sees; one ``os.write`` per request keeps a
request's lines together.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.data.schema import EVENT_TYPES, EVENTS

POSITIVE_RATING = 4.0  # ratings of 4 and 5 count as positive engagement, as in marts.user_histories


@dataclass(frozen=True)
class FeedbackEvent:
    """One interaction reported by a client (the service's validated request, without transport types)."""

    event_type: str
    user_id: str
    item_id: str
    ts: datetime | None = None
    request_id: str | None = None
    position: int | None = None
    dwell_seconds: float | None = None
    rating: float | None = None

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"event_type: {self.event_type!r} is not one of {EVENT_TYPES}")

    @property
    def is_positive(self) -> bool:
        """Whether the event says the user liked the item (a click, a dwell, or a rating of 4 or more)."""
        if self.event_type == "rating":
            return self.rating is not None and self.rating >= POSITIVE_RATING
        return self.event_type in ("click", "dwell")


def _utc_naive(ts: datetime) -> datetime:
    """Raw timestamps are naive UTC: convert aware ones, keep naive ones as they are (assumed UTC)."""
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def to_raw_events(events: Sequence[FeedbackEvent], now: datetime | None = None) -> list[dict[str, Any]]:
    """Raw ``events`` rows (exactly ``EVENTS.column_names``) for ``events``, each with a fresh uuid event_id.

    An event without a request_id did not come from a served slate (a rating from a detail page, say). The
    marts count engagement per impression, so such events get a request of their own, one per
    (user, item) in the call, and an impression at position 0 when the call holds none for that pair; the
    MovieLens loader maps rating-only data the same way.
    """
    now = _utc_naive(now or datetime.now(UTC))
    standalone: dict[tuple[str, str], str] = {}
    has_impression = {(e.request_id, e.user_id, e.item_id) for e in events if e.event_type == "impression"}
    rows: list[dict[str, Any]] = []
    for event in events:
        ts = _utc_naive(event.ts) if event.ts is not None else now
        request_id = event.request_id
        if request_id is None:
            key = (event.user_id, event.item_id)
            if key not in standalone:
                standalone[key] = f"feedback-{uuid.uuid4().hex}"
                if (None, *key) not in has_impression and event.event_type != "impression":
                    rows.append(_row("impression", event.user_id, event.item_id, ts, standalone[key], 0))
            request_id = standalone[key]
        rows.append(
            _row(
                event.event_type,
                event.user_id,
                event.item_id,
                ts,
                request_id,
                event.position,
                event.dwell_seconds,
                event.rating,
            )
        )
    return rows


def _row(
    event_type: str,
    user_id: str,
    item_id: str,
    ts: datetime,
    request_id: str,
    position: int | None,
    dwell_seconds: float | None = None,
    rating: float | None = None,
) -> dict[str, Any]:
    # the inbox contract: exactly the raw events columns, in order (tests compare with EVENTS.column_names)
    row = {
        "event_id": uuid.uuid4().hex,
        "request_id": request_id,
        "user_id": user_id,
        "item_id": item_id,
        "event_type": event_type,
        # a space, not 'T': the text DuckDB's TIMESTAMP cast reads in every version
        "event_ts": ts.isoformat(sep=" ", timespec="microseconds"),
        "position": position,
        "dwell_seconds": dwell_seconds,
        "rating": rating,
    }
    return row


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durable(path: Path) -> None:
    """``mkdir -p`` that also fsyncs the parent of every folder it creates (a new folder is a new entry)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(folder.parent)


class FeedbackInbox:
    """Appends raw event rows durably to ``<inbox>/events/feedback-<date>-<pid>.jsonl`` (thread-safe)."""

    def __init__(self, inbox_dir: Path, pid: int | None = None) -> None:
        self.events_dir = Path(inbox_dir) / EVENTS.name
        self.pid = os.getpid() if pid is None else pid
        self._lock = threading.Lock()
        self.n_appended = 0

    def path_for(self, when: datetime) -> Path:
        """The file rows written at ``when`` (UTC) go to: one per day and process."""
        return self.events_dir / f"feedback-{_utc_naive(when):%Y-%m-%d}-{self.pid}.jsonl"

    def append(self, rows: Iterable[dict[str, Any]], now: datetime | None = None) -> Path:
        """Write ``rows`` as JSON lines and return once they (and a newly created file's name) are on disk."""
        data = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()
        if not data:
            return self.path_for(now or datetime.now(UTC))
        with self._lock:
            path = self.path_for(now or datetime.now(UTC))
            _make_dirs_durable(self.events_dir)
            fd, created = self._open(path)
            try:
                view = memoryview(data)
                while view:  # os.write may write less than asked (signals, quotas): finish the buffer
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(path.parent)
            self.n_appended += data.count(b"\n")
            return path

    @staticmethod
    def _open(path: Path) -> tuple[int, bool]:
        """Open ``path`` for appending; says whether this call created it (its name then needs an fsync)."""
        while True:
            try:
                return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                pass
            try:
                return os.open(path, os.O_WRONLY | os.O_APPEND), False
            except FileNotFoundError:
                continue  # moved to processed/ between the two calls: create it anew


class RecentActivity:
    """Each user's latest positive feedback items, newest last, kept in memory (thread-safe, bounded)."""

    def __init__(self, max_items_per_user: int = 50) -> None:
        self.max_items = max_items_per_user
        self._items: dict[str, deque[str]] = {}
        self._lock = threading.Lock()

    def record(self, events: Iterable[FeedbackEvent]) -> int:
        """Remember the positive events in time order; returns how many were recorded."""
        positives = sorted(
            (e for e in events if e.is_positive),
            key=lambda e: _utc_naive(e.ts) if e.ts is not None else datetime.max,
        )
        with self._lock:
            for event in positives:
                items = self._items.setdefault(event.user_id, deque(maxlen=self.max_items))
                if event.item_id in items:  # a click then a dwell on one item is one engagement
                    items.remove(event.item_id)
                items.append(event.item_id)
        return len(positives)

    def items(self, user_id: str) -> list[str]:
        """The user's recent positive items, oldest first (empty for a user without feedback)."""
        with self._lock:
            return list(self._items.get(user_id, ()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
