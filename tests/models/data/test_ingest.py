"""Ingest: every kind of bad row is quarantined with its field and reason, and nothing is lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pytest

from models.data.ingest import ingest_inbox, ingest_table

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "ingest.duckdb"))
    yield connection
    connection.close()


def _users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "user_group": ["18-29", "50+"],
            "region": ["north", "south"],
            "preferred_style": ["casual", None],
            "declared_interests": ["sports|travel", None],
            "signup_at": ["2026-01-01", "2026-02-01 10:00:00"],
        }
    )


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "title": ["Title one", "Title two"],
            "body": ["Body one.", "Body two."],
            "category": ["sports", "travel"],
            "tags": ["a|b", None],
            "creator_id": ["c1", "c2"],
            "creator_group": ["large", "independent"],
            "published_at": ["2026-01-01", "2026-01-02"],
        }
    )


def _event(event_id: str, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "event_id": event_id,
        "request_id": "r1",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "impression",
        "event_ts": "2026-10-01 12:00:00",
        "position": 0,
        "dwell_seconds": None,
        "rating": None,
    }
    row.update(overrides)
    return row


# One row per kind of defect the issue names, each with the field the quarantine must blame.
BAD_EVENTS = {
    "wrong type": (_event("e_type", event_ts="yesterday-ish"), "event_ts", "cannot parse"),
    "unknown user": (_event("e_user", user_id="ghost"), "user_id", "unknown user"),
    "unknown item": (_event("e_item", item_id="nope"), "item_id", "unknown item"),
    "negative dwell": (
        _event("e_dwell", event_type="dwell", dwell_seconds=-4.0),
        "dwell_seconds",
        "negative",
    ),
    "future timestamp": (_event("e_future", event_ts="2030-01-01 00:00:00"), "event_ts", "future"),
    "bad rating": (_event("e_rating", event_type="rating", rating=9), "rating", "outside"),
    "unknown event type": (_event("e_kind", event_type="hover"), "event_type", "unknown value"),
    "missing id": (_event(None), "event_id", "missing event_id"),
}


def test_each_kind_of_bad_row_is_quarantined_with_field_and_reason(con):
    ingest_table(con, "users", _users(), batch_id="b", source="test", now=NOW)
    ingest_table(con, "items", _items(), batch_id="b", source="test", now=NOW)
    good = [_event("e_ok"), _event("e_click", event_type="click")]
    duplicate = _event("e_ok", event_type="click")  # same event_id as the first good row
    rows = good + [row for row, _, _ in BAD_EVENTS.values()] + [duplicate]
    report = ingest_table(con, "events", pd.DataFrame(rows), batch_id="b", source="test", now=NOW)

    assert report.rows_in == len(rows)
    assert report.rows_clean == 2
    assert report.rows_in == report.rows_clean + report.rows_quarantined
    clean_ids = {r[0] for r in con.execute("select event_id from raw.events").fetchall()}
    assert clean_ids == {"e_ok", "e_click"}

    quarantined = con.execute(
        "select source_row, field, reason, record from raw.quarantine where source_table = 'events'"
    ).df()
    by_row = {int(r.source_row): r for r in quarantined.itertuples()}
    for offset, (name, (_, field, reason_part)) in enumerate(BAD_EVENTS.items()):
        source_row = len(good) + offset + 1  # source_row is 1-based input order
        entry = by_row[source_row]
        assert entry.field == field, name
        assert reason_part in entry.reason, (name, entry.reason)
    dup = by_row[len(rows)]
    assert dup.reason == "duplicate event_id within batch"
    # The record keeps the original values, so a quarantined row can be repaired and replayed.
    assert json.loads(by_row[len(good) + 1].record)["event_ts"] == "yesterday-ish"


def test_reingesting_the_same_rows_quarantines_them_as_duplicates(con):
    ingest_table(con, "users", _users(), batch_id="b1", source="test", now=NOW)
    again = ingest_table(con, "users", _users(), batch_id="b2", source="test", now=NOW)
    assert again.rows_clean == 0 and again.rows_quarantined == 2
    assert con.execute("select count(*) from raw.users").fetchone()[0] == 2
    reasons = {r[0] for r in con.execute("select reason from raw.quarantine").fetchall()}
    assert reasons == {"duplicate user_id already ingested"}


def test_bad_first_copy_does_not_make_a_good_second_copy_a_duplicate(con):
    users = pd.concat([_users().iloc[[0]].assign(signup_at="not a date"), _users().iloc[[0]]])
    report = ingest_table(con, "users", users, batch_id="b", source="test", now=NOW)
    assert (report.rows_clean, report.rows_quarantined) == (1, 1)
    assert (
        con.execute("select reason from raw.quarantine").fetchone()[0].startswith("signup_at: cannot parse")
    )


def test_inbox_counts_malformed_json_lines_and_loses_nothing(con, tmp_path):
    ingest_table(con, "users", _users(), batch_id="b", source="test", now=NOW)
    ingest_table(con, "items", _items(), batch_id="b", source="test", now=NOW)
    inbox = tmp_path / "inbox" / "events"
    inbox.mkdir(parents=True)
    lines = [
        json.dumps(_event("f1", event_type="click")),
        "{not json",
        json.dumps(_event("f2", user_id="ghost")),
    ]
    (inbox / "feedback.jsonl").write_text("\n".join(lines) + "\n")

    report = ingest_inbox(con, [inbox / "feedback.jsonl"], now=NOW)
    events = report.tables["events"]
    assert (events.rows_in, events.rows_clean, events.rows_quarantined) == (3, 1, 2)
    assert events.reasons["malformed JSON"] == 1
    assert con.execute("select count(*) from raw.quarantine").fetchone()[0] == 2


def test_ledger_records_counts_per_batch(con):
    ingest_table(con, "users", _users(), batch_id="b", source="test", now=NOW)
    row = con.execute("select rows_in, rows_clean, rows_quarantined from raw.ingest_batches").fetchone()
    assert row == (2, 2, 0)
