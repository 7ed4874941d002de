"""Great Expectations suites catch what they promise, on real DuckDB tables."""

from __future__ import annotations

import duckdb
import pytest

from models.data.quality import SUITES, validate_table
from models.data.schema import EVENTS, ITEMS, USERS
from models.settings import QualitySettings


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "q.duckdb"))
    connection.execute("create schema raw; create schema marts")
    for table in (USERS, ITEMS, EVENTS):
        # Without the primary key, so the test can plant the duplicates ingest would have stopped.
        sql = table.create_sql()  # raw.events has no primary key (ingest checks event_id itself)
        connection.execute(sql.split(", PRIMARY KEY")[0] + ")" if ", PRIMARY KEY" in sql else sql)
    yield connection
    connection.close()


def _insert_events(con, rows):
    con.executemany("insert into raw.events values (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def test_clean_events_pass(con):
    _insert_events(con, [(f"e{i}", "r", "u", "i", "click", "2026-10-01", 0, None, None) for i in range(5)])
    result = validate_table(con, SUITES["raw_events"], QualitySettings(min_events=5))
    assert result.success, result.summary()


def test_bad_events_fail_and_name_the_column(con):
    rows = [
        ("e1", "r", "u", "i", "click", "2026-10-01", 0, None, None),
        ("e1", "r", "u", "i", "click", "2026-10-01", 0, None, None),  # duplicate key
        ("e2", "r", "u", "i", "dwell", "2026-10-01", None, -1.0, None),  # negative dwell
        ("e3", "r", "u", "i", "hover", "2026-10-01", 0, None, None),  # unknown type
    ]
    _insert_events(con, rows)
    result = validate_table(con, SUITES["raw_events"], QualitySettings(min_events=1))
    assert not result.success
    failed = {(o.expectation, o.column) for o in result.failures}
    assert ("expect_column_values_to_be_between", "dwell_seconds") in failed
    assert ("expect_column_values_to_be_in_set", "event_type") in failed
    assert ("key_is_unique", "event_id") in failed
    assert "dwell_seconds" in result.summary()


def test_row_count_minimum_is_checked_on_the_whole_table(con):
    _insert_events(con, [(f"e{i}", "r", "u", "i", "click", "2026-10-01", 0, None, None) for i in range(30)])
    # A sample of 10 rows must not make a 30-row table look too small for a minimum of 20.
    result = validate_table(con, SUITES["raw_events"], QualitySettings(min_events=20, sample_rows=10))
    assert result.rows == 30 and result.rows_validated == 10
    assert result.success, result.summary()
    too_few = validate_table(con, SUITES["raw_events"], QualitySettings(min_events=31, sample_rows=10))
    assert [o.expectation for o in too_few.failures] == ["row_count_at_least"]


def test_history_time_must_not_go_backwards_within_a_user(con):
    con.execute(
        "create table marts.user_histories as select * from (values "
        "('u1', 'i1', timestamp '2026-10-02', 'train', 1, 0.0, null),"
        "('u1', 'i2', timestamp '2026-10-01', 'train', 2, 0.0, null)) "
        "t(user_id, item_id, event_ts, split, seq, dwell_seconds, rating)"
    )
    result = validate_table(con, SUITES["user_histories"], QualitySettings())
    assert [o.column for o in result.failures] == ["ts_monotonic_in_user"]
