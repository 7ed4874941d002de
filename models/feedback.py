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

Exactly once: every row carries an ``event_id`` that stays the same when a client retries (the client's own id,
or one derived from its ``Idempotency-Key`` and the event's position, see :func:`derive_event_id`; the
impression and request added for a standalone event are derived from the event's id). The writer keeps an
index of the ids already in the inbox (``<inbox>/events`` and ``<inbox>/processed/events``, rebuilt from the
files when it starts and caught up with lines other processes appended) and writes only rows whose id is new;
checking and writing happen under a file lock (``<inbox>/.feedback.lock``, the ``filelock`` package), so
two writers (workers, replicas on one disk, a restarted server) never both store an id. Ingest deduplicates
on ``event_id`` as well, for files older than ``dedup_days`` that the index no longer holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock

from models.data.schema import EVENT_TYPES, EVENTS

log = logging.getLogger(__name__)

POSITIVE_RATING = 4.0  # ratings of 4 and 5 count as positive engagement, as in marts.user_histories
EVENT_ID_MAX = 128
EVENT_ID_RULE = f"1-{EVENT_ID_MAX} printable ASCII characters"
_EVENT_ID = re.compile(rf"[\x20-\x7e]{{1,{EVENT_ID_MAX}}}")
IDEMPOTENCY_KEY_MAX = 255
LOCK_NAME = ".feedback.lock"  # in the inbox folder itself: the sensor only reads files in its subfolders


def valid_event_id(value: str) -> bool:
    """Whether ``value`` is an acceptable client event id (1-128 printable ASCII characters)."""
    return _EVENT_ID.fullmatch(value) is not None


def valid_idempotency_key(value: str) -> bool:
    """Whether ``value`` is an acceptable ``Idempotency-Key`` header (1-255 printable ASCII characters)."""
    return 0 < len(value) <= IDEMPOTENCY_KEY_MAX and all(" " <= ch <= "~" for ch in value)


def inbox_lock(inbox_dir: Path, timeout_s: float = 30) -> FileLock:
    """The inbox's file lock: the writer holds it from open to fsync, the ingest holds it to move files away."""
    Path(inbox_dir).mkdir(parents=True, exist_ok=True)
    return FileLock(Path(inbox_dir) / LOCK_NAME, timeout=timeout_s)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def derive_event_id(idempotency_key: str, index: int) -> str:
    """The event id of the ``index``-th event of a request sent with ``idempotency_key`` (same on retries)."""
    return f"idem-{_digest(idempotency_key)}-{index}"


def with_event_ids(events: Sequence[FeedbackEvent], idempotency_key: str | None) -> list[FeedbackEvent]:
    """``events`` with an id each: the client's, else derived from the key and the position, else a uuid."""
    out = []
    for index, event in enumerate(events):
        if event.event_id is None:
            new_id = uuid.uuid4().hex if idempotency_key is None else derive_event_id(idempotency_key, index)
            event = replace(event, event_id=new_id)
        out.append(event)
    return out


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
    event_id: str | None = None  # the same on every retry of the event; None: a fresh uuid when stored

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"event_type: {self.event_type!r} is not one of {EVENT_TYPES}")
        if self.event_id is not None and not valid_event_id(self.event_id):
            raise ValueError(f"event_id: {self.event_id[:40]!r} is not {EVENT_ID_RULE}")

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
    """Raw ``events`` rows (exactly ``EVENTS.column_names``) for ``events``, keeping each event's ``event_id``.

    An event without an id gets a fresh uuid. An event without a request_id did not come from a served slate
    (a rating from a detail page, say). The marts count engagement per impression, so such events get a
    request of their own, one per (user, item) in the call, and an impression at position 0 when the call
    holds none for that pair (the MovieLens loader maps rating-only data the same way); both are derived from
    the id of the pair's first event, so a retried event brings the same ids again.
    """
    now = _utc_naive(now or datetime.now(UTC))
    standalone: dict[tuple[str, str], str] = {}
    has_impression = {(e.request_id, e.user_id, e.item_id) for e in events if e.event_type == "impression"}
    rows: list[dict[str, Any]] = []
    for event in events:
        event_id = event.event_id or uuid.uuid4().hex
        ts = _utc_naive(event.ts) if event.ts is not None else now
        request_id = event.request_id
        if request_id is None:
            key = (event.user_id, event.item_id)
            if key not in standalone:
                standalone[key] = f"feedback-{_digest('request', event_id)}"
                if (None, *key) not in has_impression and event.event_type != "impression":
                    impression_id = f"imp-{_digest('impression', event_id)}"
                    rows.append(
                        _row(
                            impression_id, "impression", event.user_id, event.item_id, ts, standalone[key], 0
                        )
                    )
            request_id = standalone[key]
        rows.append(
            _row(
                event_id,
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
    event_id: str,
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
        "event_id": event_id,
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


@dataclass(frozen=True)
class StoreResult:
    """What :meth:`FeedbackInbox.store` did with a batch of events."""

    new: int  # events written now
    duplicates: int  # events whose id was already stored (or repeated within the batch): not written again
    rows_written: int  # raw rows written (new events plus impressions added for standalone ones)
    path: Path | None  # the file written to (None when nothing was new)
    stored: tuple[FeedbackEvent, ...]  # the events written now, with their ids


_FILE_DATE = re.compile(r"feedback-(\d{4}-\d{2}-\d{2})-")


class FeedbackInbox:
    """Appends raw event rows durably to ``<inbox>/events/feedback-<date>-<pid>.jsonl``, each event_id once.

    Thread-safe within a process and, through the inbox's file lock, across processes. ``dedup_days`` bounds
    the index (and its memory): files dated more than that many days before the newest write are not read,
    so a retry older than that is left to ingest's own dedup on ``event_id``; None keeps every file.
    """

    def __init__(
        self,
        inbox_dir: Path,
        pid: int | None = None,
        dedup_days: int | None = None,
        lock_timeout_s: float = 30,
    ) -> None:
        self.inbox_dir = Path(inbox_dir)
        self.events_dir = self.inbox_dir / EVENTS.name
        self.processed_dir = self.inbox_dir / "processed" / EVENTS.name
        self.pid = os.getpid() if pid is None else pid
        self.dedup_days = dedup_days
        self._lock = threading.Lock()
        self._file_lock = FileLock(self.inbox_dir / LOCK_NAME, timeout=lock_timeout_s)  # = inbox_lock()
        self.n_appended = 0
        # The index: ids seen, and how far each file has been read, by (inode, name): a move to processed/
        # keeps both, and the file started anew after a move has another inode.
        self._ids: set[str] = set()
        self._offsets: dict[tuple[int, str], int] = {}
        self._final: set[tuple[int, str]] = set()  # processed files read to their end (nothing appends there)

    def path_for(self, when: datetime) -> Path:
        """The file rows written at ``when`` (UTC) go to: one per day and process."""
        return self.events_dir / f"feedback-{_utc_naive(when):%Y-%m-%d}-{self.pid}.jsonl"

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        with self._lock:
            return event_id in self._ids

    def refresh(self, now: datetime | None = None) -> int:
        """Catch the index up with the inbox files (under the file lock); returns how many ids it holds."""
        with self._lock, self._locked_dirs():
            self._catch_up(now or datetime.now(UTC))
            return len(self._ids)

    def store(self, events: Sequence[FeedbackEvent], now: datetime | None = None) -> StoreResult:
        """Write the events whose id is not stored yet (uuid for those without one); says what was new."""
        now = now or datetime.now(UTC)
        events = [e if e.event_id is not None else replace(e, event_id=uuid.uuid4().hex) for e in events]
        with self._lock, self._locked_dirs():
            self._catch_up(now)
            seen: set[str] = set()
            fresh = []
            for event in events:
                assert event.event_id is not None
                if event.event_id in self._ids or event.event_id in seen:
                    continue
                seen.add(event.event_id)
                fresh.append(event)
            rows = [r for r in to_raw_events(fresh, now=now) if r["event_id"] not in self._ids]
            path = self._write(rows, now) if rows else None
        return StoreResult(len(fresh), len(events) - len(fresh), len(rows), path, tuple(fresh))

    def append(self, rows: Iterable[dict[str, Any]], now: datetime | None = None) -> Path:
        """Write the ``rows`` whose event_id is new as JSON lines; returns once they are on disk."""
        now = now or datetime.now(UTC)
        rows = list(rows)
        with self._lock, self._locked_dirs():
            self._catch_up(now)
            seen: set[str] = set()
            new = []
            for row in rows:
                if row["event_id"] in self._ids or row["event_id"] in seen:
                    continue
                seen.add(row["event_id"])
                new.append(row)
            return self._write(new, now) if new else self.path_for(now)

    # --- under both locks ---------------------------------------------------------------------------------------

    def _locked_dirs(self) -> FileLock:
        _make_dirs_durable(self.events_dir)
        return self._file_lock

    def _write(self, rows: list[dict[str, Any]], now: datetime) -> Path:
        data = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()
        path = self.path_for(now)
        fd, created = self._open(path)
        try:
            stat = os.fstat(fd)
            size, key = stat.st_size, (stat.st_ino, path.name)
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # a line cut short (a crash of an earlier process with this pid): end it, ingest quarantines it
                data = b"\n" + data
            view = memoryview(data)
            while view:  # os.write may write less than asked (signals, quotas): finish the buffer
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)
        if self._offsets.get(key, 0) == size:  # read up to here: what was just written is indexed too
            self._offsets[key] = size + len(data)
        self._ids.update(row["event_id"] for row in rows)
        self.n_appended += len(rows)
        return path

    def _catch_up(self, now: datetime) -> None:
        """Index the lines appended since the last look, in ``events/`` and ``processed/events/``."""
        oldest = None
        if self.dedup_days is not None:
            oldest = f"{_utc_naive(now) - timedelta(days=self.dedup_days):%Y-%m-%d}"
        for folder, final in ((self.events_dir, False), (self.processed_dir, True)):
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                key = (entry.inode(), entry.name)
                if key in self._final or not entry.name.endswith(".jsonl") or not entry.is_file():
                    continue
                dated = _FILE_DATE.match(entry.name)
                if oldest is not None and dated is not None and dated.group(1) < oldest:
                    self._final.add(key)
                    continue
                offset = self._offsets.get(key, 0)
                try:
                    size = entry.stat().st_size
                    if size < offset:  # not the file read before (an inode used again): read it whole
                        offset = 0
                    if size > offset:
                        self._offsets[key] = offset + self._read_ids(Path(entry.path), offset)
                except FileNotFoundError:  # moved to processed/ meanwhile: read there
                    continue
                if final:
                    self._final.add(key)

    def _read_ids(self, path: Path, offset: int) -> int:
        """Add the ids of the whole lines of ``path`` from ``offset``; returns the bytes consumed."""
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line without its newline yet is read next time
        for line in data[:end].splitlines():
            try:
                event_id = json.loads(line).get("event_id")
            except (ValueError, AttributeError):
                continue  # a malformed line holds no id (ingest quarantines it)
            if isinstance(event_id, str):
                self._ids.add(event_id)
        return end

    @staticmethod
    def _open(path: Path) -> tuple[int, bool]:
        """Open ``path`` for appending; says whether this call created it (its name then needs an fsync)."""
        while True:
            try:
                return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                pass
            try:
                return os.open(path, os.O_RDWR | os.O_APPEND), False
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
