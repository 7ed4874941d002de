"""Ingest: every kind of bad row is quarantined with its field and reason, and nothing is lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.data.ingest import ROWS_PER_STEP, _steps, ingest_inbox, ingest_snapshot, ingest_table
from models.data.simulator import RawDataset
from models.data.sources import write_dataset_parquet

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
    assert report.rows_duplicate == 1  # a repeated event_id is a retry: skipped and counted, not bad
    assert report.rows_quarantined == len(BAD_EVENTS)
    assert report.rows_in == report.rows_clean + report.rows_quarantined + report.rows_duplicate
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
    assert len(rows) not in by_row  # the duplicate is not in the quarantine
    assert con.execute("select event_type from raw.events where event_id = 'e_ok'").fetchone() == (
        "impression",
    )
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
    row = con.execute(
        "select rows_in, rows_clean, rows_quarantined, rows_duplicate from raw.ingest_batches"
    ).fetchone()
    assert row == (2, 2, 0, 0)


def _write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_repeated_event_ids_are_skipped_and_counted_within_across_files_and_against_the_table(con, tmp_path):
    ingest_table(con, "users", _users(), batch_id="b", source="test", now=NOW)
    ingest_table(con, "items", _items(), batch_id="b", source="test", now=NOW)
    ingest_table(con, "events", pd.DataFrame([_event("stored")]), batch_id="b", source="test", now=NOW)
    inbox = tmp_path / "inbox" / "events"
    # a.jsonl: a new event, its retry in the same file, and a retry of an event already in raw.events;
    # b.jsonl (a client retrying after a timeout): the same new event again, another new one, one bad row.
    _write_jsonl(inbox / "a.jsonl", [_event("n1"), _event("n1"), _event("stored", event_type="click")])
    _write_jsonl(inbox / "b.jsonl", [_event("n1"), _event("n2"), _event("n3", user_id="ghost")])

    report = ingest_inbox(con, [inbox / "a.jsonl", inbox / "b.jsonl"], now=NOW)
    events = report.tables["events"]
    assert (events.rows_in, events.rows_clean, events.rows_quarantined, events.rows_duplicate) == (6, 2, 1, 3)
    stored = dict(con.execute("select event_id, event_type from raw.events").fetchall())
    assert stored == {"stored": "impression", "n1": "impression", "n2": "impression"}  # the first copy stays
    assert con.execute("select reason from raw.quarantine").fetchall() == [("user_id: unknown user 'ghost'",)]
    ledger = con.execute(
        "select rows_in, rows_clean, rows_quarantined, rows_duplicate from raw.ingest_batches "
        "where batch_id = ?",
        [report.batch_id + ":events"],
    ).fetchone()
    assert ledger == (6, 2, 1, 3)

    # the same files ingested again (a replay) store nothing new and quarantine nothing new
    again = ingest_inbox(con, [inbox / "a.jsonl", inbox / "b.jsonl"], now=NOW).tables["events"]
    assert (again.rows_clean, again.rows_duplicate, again.rows_quarantined) == (0, 5, 1)
    assert con.execute("select count(*) from raw.events").fetchone() == (3,)


def test_ledger_gains_the_duplicate_column_on_an_existing_warehouse(con):
    con.execute("create schema raw")
    con.execute(
        "create table raw.ingest_batches (batch_id varchar primary key, source varchar not null, "
        "table_name varchar not null, rows_in bigint not null, rows_clean bigint not null, "
        "rows_quarantined bigint not null, ingested_at timestamp not null)"
    )
    con.execute("insert into raw.ingest_batches values ('old', 's', 'users', 1, 1, 0, now())")
    ingest_table(con, "users", _users(), batch_id="new", source="test", now=NOW)
    rows = con.execute("select batch_id, rows_duplicate from raw.ingest_batches order by 1").fetchall()
    assert rows == [("new:users", 0), ("old", 0)]


def test_users_table_gains_the_nullable_attributes_on_an_existing_warehouse(con):
    # raw.users as created before gender and occupation were in the schema, with one stored user
    con.execute("create schema raw")
    con.execute(
        "create table raw.users (user_id varchar not null, user_group varchar not null, region varchar not null, "
        "preferred_style varchar, declared_interests varchar, signup_at timestamp not null, primary key (user_id))"
    )
    con.execute("insert into raw.users values ('u0', '30-49', 'west', null, null, timestamp '2025-12-01')")
    users = _users().assign(gender=["F", None], occupation=["writer", None])
    report = ingest_table(con, "users", users, batch_id="new", source="test", now=NOW)
    assert report.rows_clean == 2 and report.rows_quarantined == 0  # a null gender or occupation is not bad
    rows = con.execute("select user_id, gender, occupation from raw.users order by user_id").fetchall()
    assert rows == [("u0", None, None), ("u1", "F", "writer"), ("u2", None, None)]


def _snapshot_with_defects() -> RawDataset:
    """Users, items and events with bad rows and repeated keys spread so that they span part boundaries."""
    users = pd.concat(
        [
            _users(),
            _users().iloc[[0]].assign(region="elsewhere"),
            _users().iloc[[1]].assign(signup_at="never"),
        ]
    )
    items = pd.concat([_items(), _items().iloc[[1]]])
    events = [_event(f"e{i}", position=i) for i in range(7)]
    events += [_event("e1", event_type="click"), _event("e_bad", rating=42, event_type="rating")]
    events += [_event("e8", user_id="ghost"), _event("e9", item_id="i2"), _event("e3"), _event("e10")]
    return RawDataset(users=users, items=items, events=pd.DataFrame(events))


def _tables(con) -> dict[str, list[tuple]]:
    queries = {
        "users": "select * from raw.users order by all",
        "items": "select * from raw.items order by all",
        "events": "select * from raw.events order by all",
        "quarantine": "select source_table, source_row, field, reason, record from raw.quarantine order by all",
        "ledger": "select table_name, rows_in, rows_clean, rows_quarantined, rows_duplicate "
        "from raw.ingest_batches order by all",
    }
    return {name: con.execute(sql).fetchall() for name, sql in queries.items()}


def test_part_wise_ingest_gives_the_same_tables_as_one_whole_part(tmp_path):
    dataset = _snapshot_with_defects()
    whole = write_dataset_parquet(dataset, tmp_path / "whole")
    parts = write_dataset_parquet(dataset, tmp_path / "parts", rows_per_part=2)
    assert len(whole["events"]) == 1 and len(parts["events"]) == 7 and len(parts["users"]) == 2
    results = {}
    # one part per step, three rows' worth of whole parts per step, and every part in one step
    runs = {
        "whole": (whole, ROWS_PER_STEP),
        "parts": (parts, 1),
        "steps": (parts, 3),
        "one": (parts, ROWS_PER_STEP),
    }
    for name, (files, rows_per_step) in runs.items():
        with duckdb.connect(str(tmp_path / f"{name}.duckdb")) as connection:
            report = ingest_snapshot(connection, files, source="test", now=NOW, rows_per_step=rows_per_step)
            results[name] = (_tables(connection), {t: vars(r) for t, r in report.tables.items()})
    assert results["parts"] == results["whole"]
    assert results["steps"] == results["whole"] and results["one"] == results["whole"]
    tables, reports = results["parts"]
    # what both must hold: first copies win; repeats within the batch are quarantined (users, items) or
    # skipped (events), across part boundaries alike
    assert [r[0] for r in tables["users"]] == ["u1", "u2"] and tables["users"][0][2] == "north"
    assert {r[3] for r in tables["quarantine"]} >= {
        "duplicate user_id within batch",
        "duplicate item_id within batch",
    }
    assert reports["events"]["rows_duplicate"] == 2 and reports["events"]["rows_quarantined"] == 2
    assert len(tables["events"]) == 9


def test_parts_are_grouped_into_steps_of_whole_parts(tmp_path):
    parts = write_dataset_parquet(_snapshot_with_defects(), tmp_path, rows_per_part=2)["events"]
    sizes = [[pq.ParquetFile(p).metadata.num_rows for p in step] for step in _steps(parts, 5)]
    assert sizes == [[2, 2], [2, 2], [2, 2, 1]]  # 13 events in parts of 2: at most 5 rows a step
    assert [len(step) for step in _steps(parts, 1)] == [
        1
    ] * 7  # a part larger than a step is a step of its own


def test_stepwise_ingest_logs_one_progress_line_per_step(tmp_path, caplog):
    files = write_dataset_parquet(_snapshot_with_defects(), tmp_path / "parts", rows_per_part=2)
    with (
        duckdb.connect(str(tmp_path / "w.duckdb")) as connection,
        caplog.at_level("INFO", "models.data.ingest"),
    ):
        ingest_snapshot(connection, files, source="test", now=NOW, rows_per_step=4)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ingest raw.events step")]
    assert [line.split(":")[0] for line in lines] == [f"ingest raw.events step {i}/4" for i in (1, 2, 3, 4)]
    assert "rows_in=13 quarantined=2 duplicates=2" in lines[-1]
