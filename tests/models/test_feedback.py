"""The service's feedback path: raw rows, the durable inbox writer, ingest of its files, the freshest history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from models.data.ingest import create_raw_schema, ingest_inbox, ingest_table
from models.data.schema import EVENTS
from models.feedback import FeedbackEvent, FeedbackInbox, RecentActivity, to_raw_events

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 20, 12, 0, 0)


def _read_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob("*.jsonl")) for line in p.read_text().splitlines()]


def test_rows_have_exactly_the_raw_event_columns_and_fresh_ids():
    events = [
        FeedbackEvent("impression", "u1", "i1", NOW, request_id="r1", position=0),
        FeedbackEvent("click", "u1", "i1", NOW + timedelta(seconds=3), request_id="r1", position=0),
        FeedbackEvent("dwell", "u1", "i1", NOW + timedelta(seconds=40), request_id="r1", dwell_seconds=37.5),
    ]
    rows = to_raw_events(events, now=NOW)
    assert [list(r) for r in rows] == [EVENTS.column_names] * 3
    assert len({r["event_id"] for r in rows}) == 3
    assert all(uuid.UUID(r["event_id"]) for r in rows)
    assert [r["event_type"] for r in rows] == ["impression", "click", "dwell"]
    assert rows[2]["dwell_seconds"] == 37.5 and rows[1]["position"] == 0


def test_aware_timestamps_become_naive_utc_and_missing_ones_take_now():
    plus_two = timezone(timedelta(hours=2))
    rows = to_raw_events(
        [
            FeedbackEvent(
                "click", "u1", "i1", datetime(2026, 11, 20, 14, 0, tzinfo=plus_two), request_id="r"
            ),
            FeedbackEvent("click", "u1", "i2", None, request_id="r"),
        ],
        now=NOW,
    )
    # 14:00 at UTC+2 is 12:00 UTC; the event without a time is stamped with the call's `now`
    assert rows[0]["event_ts"] == "2026-11-20 12:00:00.000000"
    assert rows[1]["event_ts"] == "2026-11-20 12:00:00.000000"


def test_events_without_request_get_their_own_request_and_an_impression():
    rows = to_raw_events(
        [
            FeedbackEvent("rating", "u1", "i1", NOW, rating=5.0),
            FeedbackEvent("click", "u1", "i1", NOW),
            FeedbackEvent("impression", "u1", "i2", NOW),
            FeedbackEvent("click", "u1", "i2", NOW),
        ],
        now=NOW,
    )
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_pair.setdefault((row["user_id"], row["item_id"]), []).append(row)
    # i1: one synthetic impression at position 0, then the rating and the click, all in one new request
    assert [r["event_type"] for r in by_pair[("u1", "i1")]] == ["impression", "rating", "click"]
    assert by_pair[("u1", "i1")][0]["position"] == 0
    assert len({r["request_id"] for r in by_pair[("u1", "i1")]}) == 1
    # i2: the caller sent an impression, so none is added
    assert [r["event_type"] for r in by_pair[("u1", "i2")]] == ["impression", "click"]
    assert by_pair[("u1", "i1")][0]["request_id"] != by_pair[("u1", "i2")][0]["request_id"]


def test_unknown_event_type_is_refused():
    with pytest.raises(ValueError, match="event_type"):
        FeedbackEvent("purchase", "u1", "i1")


def test_append_writes_one_file_per_day_and_process(tmp_path):
    inbox = FeedbackInbox(tmp_path / "inbox", pid=4242)
    day1 = datetime(2026, 11, 20, 23, 59)
    path1 = inbox.append(to_raw_events([FeedbackEvent("click", "u1", "i1", day1, "r", 0)]), now=day1)
    path2 = inbox.append(to_raw_events([FeedbackEvent("click", "u1", "i2", day1, "r", 1)]), now=day1)
    path3 = inbox.append(
        to_raw_events([FeedbackEvent("click", "u1", "i3", day1, "r", 2)]), now=day1 + timedelta(minutes=2)
    )
    assert path1 == path2 == tmp_path / "inbox" / "events" / "feedback-2026-11-20-4242.jsonl"
    assert path3.name == "feedback-2026-11-21-4242.jsonl"
    assert [r["item_id"] for r in _read_lines(path1.parent)] == ["i1", "i2", "i3"]
    assert inbox.n_appended == 3


def test_append_fsyncs_the_file_after_writing_and_the_folder_on_create(tmp_path, monkeypatch):
    # A spy records the order of writes and fsyncs; the real calls still run.
    log: list[tuple[str, str]] = []
    real_write, real_fsync = os.write, os.fsync

    def spy_write(fd: int, data: bytes) -> int:
        log.append(("write", os.readlink(f"/proc/self/fd/{fd}")))
        return real_write(fd, data)

    def spy_fsync(fd: int) -> None:
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "write", spy_write)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    inbox = FeedbackInbox(tmp_path / "inbox", pid=1)
    path = inbox.append(to_raw_events([FeedbackEvent("click", "u1", "i1", NOW, "r", 0)]), now=NOW)
    file, folder = str(path), str(path.parent)
    # the file's data is synced after its last write, then the new file's name (its folder)
    assert log.index(("fsync", file)) > max(i for i, e in enumerate(log) if e == ("write", file))
    assert log.index(("fsync", folder)) > log.index(("fsync", file))
    log.clear()
    inbox.append(to_raw_events([FeedbackEvent("click", "u1", "i2", NOW, "r", 1)]), now=NOW)
    # appending to an existing file needs no folder sync
    assert ("fsync", file) in log and ("fsync", folder) not in log


def test_a_file_moved_away_by_the_pipeline_is_started_again(tmp_path):
    inbox = FeedbackInbox(tmp_path / "inbox", pid=7)
    path = inbox.append(to_raw_events([FeedbackEvent("click", "u1", "i1", NOW, "r", 0)]), now=NOW)
    processed = tmp_path / "inbox" / "processed" / "events"
    processed.mkdir(parents=True)
    path.rename(processed / path.name)
    again = inbox.append(to_raw_events([FeedbackEvent("click", "u1", "i2", NOW, "r", 1)]), now=NOW)
    assert again == path and again.exists()
    assert [r["item_id"] for r in _read_lines(path.parent)] == ["i2"]
    assert [r["item_id"] for r in _read_lines(processed)] == ["i1"]


def test_inbox_files_ingest_cleanly_into_raw_events(tmp_path):
    """The contract with the pipeline: the files pass ingest_inbox's validation with nothing quarantined."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    create_raw_schema(con)
    users = pd.DataFrame(
        {"user_id": ["u1"], "user_group": ["a"], "region": ["r"], "signup_at": ["2026-01-01 00:00:00"]}
    )
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "title": ["t1", "t2"],
            "body": ["b1", "b2"],
            "category": ["c", "c"],
            "creator_id": ["k", "k"],
            "creator_group": ["large", "large"],
            "published_at": ["2026-01-01 00:00:00"] * 2,
        }
    )
    ingest_table(con, "users", users, batch_id="b", source="test")
    ingest_table(con, "items", items, batch_id="b", source="test")
    inbox = FeedbackInbox(tmp_path / "inbox", pid=1)
    events = [
        FeedbackEvent("impression", "u1", "i1", NOW, "r1", 0),
        FeedbackEvent("click", "u1", "i1", NOW, "r1", 0),
        FeedbackEvent("dwell", "u1", "i1", NOW, "r1", dwell_seconds=12.0),
        FeedbackEvent("rating", "u1", "i2", NOW, rating=4.0),  # + a synthetic impression
    ]
    path = inbox.append(to_raw_events(events, now=NOW), now=NOW)
    report = ingest_inbox(con, [path], now=NOW + timedelta(hours=1))
    assert report.tables["events"].rows_in == 5
    assert report.tables["events"].rows_quarantined == 0, report.tables["events"].reasons
    stored = con.execute(
        "select event_type, position, dwell_seconds, rating from raw.events order by event_type"
    ).fetchall()
    assert stored == [
        ("click", 0, None, None),
        ("dwell", None, 12.0, None),
        ("impression", 0, None, None),
        ("impression", 0, None, None),
        ("rating", None, None, 4.0),
    ]
    con.close()


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, UTC
    from pathlib import Path
    from models.feedback import FeedbackEvent, FeedbackInbox, to_raw_events

    inbox = FeedbackInbox(Path(sys.argv[1]))
    for n in range(10_000):
        rows = to_raw_events([FeedbackEvent("click", "u1", f"i{n}", request_id="r", position=0)])
        inbox.append(rows)
        print(rows[0]["event_id"], flush=True)  # the acknowledgement, only after append returned
    """
)


def test_every_acknowledged_event_survives_sigkill(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path / "inbox")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    acked = [proc.stdout.readline().strip() for _ in range(50)]
    os.kill(proc.pid, signal.SIGKILL)
    acked += proc.stdout.read().split()  # acknowledgements already in the pipe when it died
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stored = {r["event_id"] for r in _read_lines(tmp_path / "inbox" / "events")}
    assert len(acked) >= 50 and set(acked) <= stored


def test_recent_activity_keeps_positive_items_newest_last_and_bounded():
    recent = RecentActivity(max_items_per_user=3)
    t = datetime(2026, 11, 20, tzinfo=UTC)
    recorded = recent.record(
        [
            FeedbackEvent("click", "u1", "i2", t + timedelta(minutes=2), "r"),
            FeedbackEvent("click", "u1", "i1", t + timedelta(minutes=1), "r"),
            FeedbackEvent("impression", "u1", "i9", t, "r"),  # shown is not liked
            FeedbackEvent("rating", "u1", "i8", t, rating=2.0),  # a low rating is not liked
            FeedbackEvent("rating", "u2", "i5", t, rating=5.0),
        ]
    )
    assert recorded == 3
    assert recent.items("u1") == ["i1", "i2"]  # time order, not arrival order
    recent.record([FeedbackEvent("dwell", "u1", "i1", t + timedelta(minutes=3), "r", dwell_seconds=9.0)])
    assert recent.items("u1") == ["i2", "i1"]  # a repeat moves to the end instead of appearing twice
    recent.record([FeedbackEvent("click", "u1", f"j{n}", t + timedelta(hours=n), "r") for n in range(1, 4)])
    assert recent.items("u1") == ["j1", "j2", "j3"]  # only the 3 newest are kept
    assert recent.items("nobody") == [] and len(recent) == 2


# --- exactly once ------------------------------------------------------------------------------------------------


def _inbox_lines(inbox: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(inbox.glob("**/*.jsonl")) for line in p.read_text().splitlines()]


def test_a_stored_event_id_is_not_stored_again_and_is_counted_as_a_duplicate(tmp_path):
    inbox = FeedbackInbox(tmp_path / "inbox", pid=1)
    batch = [
        FeedbackEvent("click", "u1", "i1", NOW, "r1", 0, event_id="app-1"),
        FeedbackEvent("rating", "u1", "i2", NOW, rating=5.0, event_id="app-2"),  # + a synthetic impression
    ]
    first = inbox.store(batch, now=NOW)
    assert (first.new, first.duplicates, first.rows_written) == (2, 0, 3)
    again = inbox.store(batch, now=NOW)
    assert (again.new, again.duplicates, again.rows_written, again.path) == (0, 2, 0, None)
    # one new event beside a retried one, and an id repeated inside the batch: only the new one is written
    mixed = inbox.store([batch[0], FeedbackEvent("click", "u1", "i3", NOW, "r1", 1, event_id="app-3")] * 2)
    assert (mixed.new, mixed.duplicates) == (1, 3)
    rows = _inbox_lines(tmp_path / "inbox")
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 4 and {"app-1", "app-2", "app-3"} <= set(ids)


def test_raw_rows_of_a_retried_standalone_event_are_identical(tmp_path):
    event = FeedbackEvent("rating", "u1", "i2", NOW, rating=4.0, event_id="app-9")
    assert to_raw_events([event], now=NOW) == to_raw_events([event], now=NOW)
    impression, rating = to_raw_events([event], now=NOW)
    assert impression["event_type"] == "impression" and impression["event_id"].startswith("imp-")
    assert rating["event_id"] == "app-9" and impression["request_id"] == rating["request_id"]


def test_ids_derive_from_the_idempotency_key_and_position():
    from models.feedback import derive_event_id, with_event_ids

    events = [
        FeedbackEvent("click", "u1", "i1", NOW),
        FeedbackEvent("click", "u1", "i2", NOW, event_id="own"),
    ]
    one = [e.event_id for e in with_event_ids(events, "key-1")]
    assert one == [derive_event_id("key-1", 0), "own"]  # the client's own id wins
    assert one == [e.event_id for e in with_event_ids(events, "key-1")]  # a retry: the same ids
    assert with_event_ids(events, "key-2")[0].event_id != one[0]
    fresh = [with_event_ids(events, None)[0].event_id for _ in range(2)]
    assert fresh[0] != fresh[1] and all(uuid.UUID(f) for f in fresh)  # no key: a fresh uuid, as before


@pytest.mark.parametrize("bad", ["", "x" * 129, "tab\there", "new\nline", "caf\u00e9"])
def test_bad_event_ids_are_refused(bad):
    with pytest.raises(ValueError, match="event_id"):
        FeedbackEvent("click", "u1", "i1", event_id=bad)


def test_the_index_is_rebuilt_from_the_inbox_and_processed_files(tmp_path):
    first = FeedbackInbox(tmp_path / "inbox", pid=1)
    first.store([FeedbackEvent("click", "u1", "i1", NOW, "r", 0, event_id="a")], now=NOW)
    path = first.store([FeedbackEvent("click", "u1", "i2", NOW, "r", 1, event_id="b")], now=NOW).path
    assert path is not None
    processed = tmp_path / "inbox" / "processed" / "events"
    processed.mkdir(parents=True)
    path.rename(processed / path.name)  # what the ingest asset does
    first.store([FeedbackEvent("click", "u1", "i3", NOW, "r", 2, event_id="c")], now=NOW)
    # a restarted server (another pid) knows all three
    restarted = FeedbackInbox(tmp_path / "inbox", pid=2)
    assert restarted.refresh(now=NOW) == 3 and "a" in restarted and "c" in restarted
    result = restarted.store(
        [FeedbackEvent("click", "u1", i, NOW, "r", 0, event_id=e) for i, e in [("i1", "a"), ("i3", "c")]],
        now=NOW,
    )
    assert (result.new, result.duplicates) == (0, 2)
    # the first writer also sees what the restarted one writes, at its next call
    restarted.store([FeedbackEvent("click", "u1", "i4", NOW, "r", 3, event_id="d")], now=NOW)
    assert (
        first.store([FeedbackEvent("click", "u1", "i4", NOW, "r", 3, event_id="d")], now=NOW).duplicates == 1
    )
    assert sorted(r["event_id"] for r in _inbox_lines(tmp_path / "inbox")) == ["a", "b", "c", "d"]


def test_the_index_holds_dedup_days_of_files(tmp_path):
    old, now = NOW - timedelta(days=10), NOW
    FeedbackInbox(tmp_path / "inbox", pid=1).store(
        [FeedbackEvent("click", "u1", "i1", old, "r", 0, event_id="o")], old
    )
    assert FeedbackInbox(tmp_path / "inbox", pid=2, dedup_days=7).refresh(now=now) == 0
    assert FeedbackInbox(tmp_path / "inbox", pid=2, dedup_days=30).refresh(now=now) == 1


def test_a_line_cut_short_by_a_crash_is_ended_before_the_next_write(tmp_path):
    inbox = FeedbackInbox(tmp_path / "inbox", pid=5)
    path = inbox.path_for(NOW)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"event_id":"a","user_id":"u1"}\n{"event_id":"cut-sh')
    inbox.store([FeedbackEvent("click", "u1", "i1", NOW, "r", 0, event_id="b")], now=NOW)
    lines = path.read_text().splitlines()
    assert lines[1] == '{"event_id":"cut-sh' and json.loads(lines[2])["event_id"] == "b"
    assert "a" in inbox and "b" in inbox and len(inbox) == 2


RACING_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, UTC
    from pathlib import Path
    from models.feedback import FeedbackEvent, FeedbackInbox

    inbox = FeedbackInbox(Path(sys.argv[1]))
    new = 0
    for start in range(0, 300, 10):
        batch = [FeedbackEvent("click", "u1", f"i{n}", request_id="r", position=0, event_id=f"e{n}")
                 for n in range(start, start + 10)]
        new += inbox.store(batch).new
    print(new)
    """
)


def test_two_processes_storing_the_same_events_store_each_once(tmp_path):
    """Two writers (two workers, a restart racing the old process) send the same 300 ids at the same time."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACING_WRITER, str(tmp_path / "inbox")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    news = [int(p.communicate(timeout=120)[0]) for p in procs]
    ids = [r["event_id"] for r in _inbox_lines(tmp_path / "inbox")]
    assert sum(news) == 300 and len(ids) == 300 and len(set(ids)) == 300, (news, len(ids))
    assert len(list((tmp_path / "inbox" / "events").glob("*.jsonl"))) >= 1


def test_the_ingest_lock_holds_off_the_writer(tmp_path):
    """While the ingest holds inbox_lock (to move files away), an append waits: no write lands mid-move."""
    import threading

    from models.feedback import inbox_lock

    inbox = FeedbackInbox(tmp_path / "inbox", pid=1)
    done = threading.Event()

    def write() -> None:
        inbox.store([FeedbackEvent("click", "u1", "i1", NOW, "r", 0, event_id="held")], now=NOW)
        done.set()

    with inbox_lock(tmp_path / "inbox"):
        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.5)  # blocked on the lock
        assert not list((tmp_path / "inbox" / "events").glob("*.jsonl"))
    writer.join(10)
    assert done.is_set() and "held" in inbox
