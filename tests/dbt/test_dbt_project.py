"""The real dbt project built on a handmade warehouse: the build passes and the marts keep their contract."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.dbt.conftest import DBT_PROJECT_DIR, EVENTS, ITEMS, USERS, BuiltWarehouse, run_dbt

pytestmark = pytest.mark.integration

MARTS = (
    "interactions",
    "split_boundaries",
    "user_histories",
    "user_features",
    "item_features",
    "training_samples",
    "daily_impressions",
    "daily_item_metrics",
)


def _impressions() -> list[tuple]:
    return [e for e in EVENTS if e[4] == "impression"]


def test_dbt_build_passes_with_every_test(built_warehouse: BuiltWarehouse) -> None:
    assert built_warehouse.build.returncode == 0, built_warehouse.build.output[-5000:]
    results = json.loads((built_warehouse.database.parent / "target" / "run_results.json").read_text())[
        "results"
    ]
    statuses = defaultdict(list)
    for result in results:
        statuses[result["unique_id"].split(".")[0]].append(result["status"])
    # Every model built, every data and unit test ran and passed: no warning (the source relationship
    # tests warn on orphan events, and the fixture has none), nothing skipped.
    assert set(statuses["model"]) == {"success"} and len(statuses["model"]) == 17
    assert set(statuses["test"]) == {"pass"} and len(statuses["test"]) > 100
    assert set(statuses["unit_test"]) == {"pass"} and len(statuses["unit_test"]) >= 5


def test_marts_land_in_the_marts_schema(built_warehouse: BuiltWarehouse) -> None:
    # generate_schema_name keeps custom schemas verbatim: readers rely on marts.<name>, not main_marts.
    rows = built_warehouse.query(
        "select table_schema, table_name from information_schema.tables where table_schema = 'marts'"
    )
    assert {name for _, name in rows} == set(MARTS)


def test_split_boundaries_are_whole_days_back_from_the_last_event(built_warehouse: BuiltWarehouse) -> None:
    # BUILD_VARS: valid_days = test_days = 2. The last event is on Oct 6, so test is Oct 5-6, valid Oct 3-4
    # and train everything from the first event's day (Oct 1); ends are exclusive midnights.
    last_day = max(e[5] for e in EVENTS).date()
    first_day = min(e[5] for e in EVENTS).date()

    def midnight(day: date) -> datetime:
        return datetime(day.year, day.month, day.day)

    test_start = midnight(last_day - timedelta(days=1))
    valid_start = test_start - timedelta(days=2)
    expected = {
        "train": (midnight(first_day), valid_start),
        "valid": (valid_start, test_start),
        "test": (test_start, midnight(last_day + timedelta(days=1))),
    }
    rows = built_warehouse.query("select split, starts_at, ends_at from marts.split_boundaries")
    assert {split: (start, end) for split, start, end in rows} == expected


@pytest.mark.parametrize("mart", ["interactions", "training_samples", "user_histories"])
def test_each_split_lies_inside_its_window(built_warehouse: BuiltWarehouse, mart: str) -> None:
    rows = built_warehouse.query(
        f"""
        select b.split, b.starts_at, b.ends_at, min(m.event_ts), max(m.event_ts), count(m.event_ts)
        from marts.split_boundaries b left join marts.{mart} m on m.split = b.split
        group by all
        """
    )
    for split, starts_at, ends_at, first_ts, last_ts, n_rows in rows:
        assert n_rows > 0, f"{mart} has no {split} rows: the fixture covers every split"
        assert starts_at <= first_ts and last_ts < ends_at, (mart, split)


def test_interactions_have_one_row_per_impression(built_warehouse: BuiltWarehouse) -> None:
    impressions = _impressions()
    rows = built_warehouse.query(
        "select request_id, item_id, clicked, position, rating from marts.interactions"
    )
    assert sorted((r, i) for r, i, *_ in rows) == sorted((e[1], e[3]) for e in impressions)
    clicks = {(e[1], e[3]) for e in EVENTS if e[4] == "click"}
    assert {(r, i) for r, i, clicked, *_ in rows if clicked == 1} == clicks
    # MovieLens-shaped requests (impression without a slot + rating) sit in slot 0 with their rating.
    by_key = {(r, i): (position, rating) for r, i, _, position, rating in rows}
    assert by_key[("r4", "i4")] == (0, 5.0) and by_key[("r5", "i3")] == (0, 2.0)


def test_training_features_are_strictly_before_the_row(built_warehouse: BuiltWarehouse) -> None:
    leaks = built_warehouse.query(
        "select count(*) from marts.training_samples where not features_as_of < event_ts"
    )
    assert leaks == [(0,)]
    row = built_warehouse.query(
        """
        select user_prior_impressions, user_prior_clicks, user_prior_ctr,
               item_prior_impressions, item_prior_clicks, item_prior_ctr, item_age_hours, features_as_of
        from marts.training_samples where request_id = 'r6' and item_id = 'i4'
        """
    )
    # r6 shows i4 to u1 on Oct 3 09:00. Before it u1 saw r1 (3 items) and r3 (3 items) and clicked once
    # in each: 6 impressions, 2 clicks. Item i4 on days before Oct 3 was shown twice on Oct 2 (r3 to u1,
    # r4 to u2) and clicked once (u2's 5-star rating). i4 was published Oct 1 00:00: 57 h before. The
    # latest event read is r4 at Oct 2 10:00 (after u1's r3 click at 08:00:20).
    assert row == [(6, 2, 2 / 6, 2, 1, 0.5, 57.0, datetime(2026, 10, 2, 10, 0))]


def test_training_samples_keep_positives_and_bounded_negatives(built_warehouse: BuiltWarehouse) -> None:
    rows = built_warehouse.query("select request_id, item_id, label from marts.training_samples")
    clicks = {(e[1], e[3]) for e in EVENTS if e[4] == "click"}
    assert {(r, i) for r, i, label in rows if label == 1} == clicks
    slate_sizes: dict[str, int] = defaultdict(int)
    for impression in _impressions():
        slate_sizes[impression[1]] += 1
    per_request: dict[str, list[int]] = defaultdict(list)
    for request_id, _, label in rows:
        per_request[request_id].append(label)
    for request_id, labels in per_request.items():
        if slate_sizes[request_id] > 1:
            assert labels.count(0) <= 4 * labels.count(1), request_id
    # r7 is a slate nobody clicked: no samples. r4 and r5 are one-item (MovieLens-shaped) requests of u2
    # at the same instant, so in one session: the 2-star r5 is kept as the negative of the 5-star r4.
    assert "r7" not in per_request
    assert per_request["r4"] == [1] and per_request["r5"] == [0]


def test_user_features_have_every_user_including_cold_ones(built_warehouse: BuiltWarehouse) -> None:
    rows = built_warehouse.query(
        "select user_id, n_impressions, n_clicks, ctr, avg_dwell_seconds, n_ratings, avg_rating, top_category "
        "from marts.user_features order by user_id"
    )
    assert [r[0] for r in rows] == [u[0] for u in USERS]
    by_user = {r[0]: r[1:] for r in rows}
    # u3 has no events: zeros, and nulls where there is nothing to average or rank.
    assert by_user["u3"] == (0, 0, 0.0, 0.0, 0, None, None)
    # u2 in train (Oct 1-2): r2 (2 shown, i2 clicked with 20 s dwell), r4 (i4, 5 stars, clicked, no dwell),
    # r5 (i3, 2 stars): 4 impressions, 2 clicks, dwell mean over clicks (20 + 0) / 2, ratings (5 + 2) / 2;
    # clicked categories sports (i2) and tech (i4) tie, so the alphabetically first wins.
    assert by_user["u2"] == (4, 2, 0.5, 10.0, 2, 3.5, "sports")
    # gender and occupation pass through from raw.users, nulls kept (u2's are unknown)
    attributes = built_warehouse.query(
        "select user_id, gender, occupation from marts.user_features order by user_id"
    )
    assert attributes == [("u1", "F", "writer"), ("u2", None, None), ("u3", "M", "engineer")]


def test_item_features_hash_content_and_keep_null_tags(built_warehouse: BuiltWarehouse) -> None:
    rows = built_warehouse.query("select item_id, tags, content_hash, popularity from marts.item_features")
    by_item = {item_id: (tags, content_hash, popularity) for item_id, tags, content_hash, popularity in rows}
    assert set(by_item) == {i[0] for i in ITEMS}
    for item_id, title, body, *_ in ITEMS:
        assert by_item[item_id][1] == hashlib.md5(f"{title}\n{body}".encode()).hexdigest()
    assert by_item["i4"][0] is None
    # popularity counts train clicks only: i4's Oct 3 click is in valid, its Oct 2 click (r4) in train.
    assert by_item["i4"][2] == 1


def test_user_histories_are_positives_in_time_order(built_warehouse: BuiltWarehouse) -> None:
    rows = built_warehouse.query(
        "select item_id, seq, split from marts.user_histories where user_id = 'u1' order by seq"
    )
    # u1 clicked i1 (r1, Oct 1), i3 (r3, Oct 2), i4 (r6, Oct 3), i2 (r8, Oct 5).
    assert rows == [("i1", 1, "train"), ("i3", 2, "train"), ("i4", 3, "valid"), ("i2", 4, "test")]


def test_dbt_parse_writes_the_manifest_dagster_reads(tmp_path: Path) -> None:
    # dagster-dbt loads target/manifest.json at import; parse must work before any warehouse exists.
    run = run_dbt(["parse"], DBT_PROJECT_DIR, tmp_path / "absent" / "recgen.duckdb", tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    assert not (tmp_path / "absent").exists(), "parse must not open (or create) the warehouse"
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    models = [n for n in manifest["nodes"].values() if n["resource_type"] == "model"]
    assert set(MARTS) <= {m["name"] for m in models}
    # Dagster keys each model by its bare name (AssetKey("training_samples")), not schema/name.
    for model in models:
        assert model["config"]["meta"]["dagster"]["asset_key"] == [model["name"]]


def test_daily_models_rebuild_only_the_days_window(built_warehouse: BuiltWarehouse, tmp_path: Path) -> None:
    # What the daily Dagster partition does: dbt gets [min_date, max_date) and replaces only that day's rows.
    database = tmp_path / "recgen.duckdb"
    shutil.copy(built_warehouse.database, database)
    days = [row[0] for row in built_warehouse.query("select distinct event_date from marts.interactions")]
    day, other = max(days), min(days)
    expected = built_warehouse.query("select count(*) from marts.interactions where event_date = ?", [day])[
        0
    ][0]
    con = duckdb.connect(str(database))
    con.execute("delete from marts.daily_impressions where event_date = ?", [day])
    # a sentinel on another day: it survives only if that day is left alone
    con.execute("update marts.daily_impressions set dwell_seconds = 9999 where event_date = ?", [other])
    con.close()
    window = json.dumps({"min_date": day.isoformat(), "max_date": (day + timedelta(days=1)).isoformat()})
    for _ in range(2):  # a re-run of the same day replaces its rows: no duplicates
        run = run_dbt(["run", "--select", "tag:daily", "--vars", window], DBT_PROJECT_DIR, database, tmp_path)
        assert run.returncode == 0, run.output[-3000:]
    con = duckdb.connect(str(database), read_only=True)
    try:
        rebuilt = con.execute("select count(*) from marts.daily_impressions where event_date = ?", [day])
        assert rebuilt.fetchone()[0] == expected
        sentinel = con.execute(
            "select min(dwell_seconds) from marts.daily_impressions where event_date = ?", [other]
        )
        assert sentinel.fetchone()[0] == 9999
        metrics = con.execute(
            "select sum(impressions) from marts.daily_item_metrics where event_date = ?", [day]
        )
        assert metrics.fetchone()[0] == expected
    finally:
        con.close()


def test_share_split_cuts_the_event_stream_by_time(tmp_path: Path) -> None:
    # The share split (MovieLens / RecBole default): test starts at the first event of the last test_share
    # of events in time order, valid at the last test_share + valid_share; the windows tile time, and every
    # mart row lies inside its window (the within_split_window and contiguity tests pass in the build).
    from tests.dbt.conftest import create_raw_tables

    database = tmp_path / "recgen.duckdb"
    create_raw_tables(database)
    share_vars = json.dumps(
        {"valid_days": 2, "test_days": 2, "negatives_per_positive": 4, "test_share": 0.25, "valid_share": 0.3}
    )
    run = run_dbt(
        ["build", "--vars", share_vars],
        DBT_PROJECT_DIR,
        database,
        tmp_path,
    )
    assert run.returncode == 0, run.output[-3000:]
    times = sorted(e[5] for e in EVENTS)
    n = len(times)
    # the first event ranked past (1 - share) of the stream, in parts per million as the model computes it
    test_start = next(t for rank, t in enumerate(times, 1) if rank * 10**6 > n * (10**6 - 250_000))
    valid_start = next(t for rank, t in enumerate(times, 1) if rank * 10**6 > n * (10**6 - 550_000))
    first_day, last_day = times[0].date(), times[-1].date()
    expected = {
        "train": (datetime(first_day.year, first_day.month, first_day.day), valid_start),
        "valid": (valid_start, test_start),
        "test": (test_start, datetime(last_day.year, last_day.month, last_day.day) + timedelta(days=1)),
    }
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute("select split, starts_at, ends_at from marts.split_boundaries").fetchall()
        assert {split: (start, end) for split, start, end in rows} == expected
        # Not the days split: with these events the share cut falls inside a day, not at midnight.
        assert (test_start.hour, test_start.minute) != (0, 0)
        counts = dict(con.execute("select split, count(*) from marts.interactions group by 1").fetchall())
        assert set(counts) == {"train", "valid", "test"}
        leaks = con.execute(
            "select count(*) from marts.interactions i join marts.split_boundaries b on i.split = b.split "
            "where i.event_ts < b.starts_at or i.event_ts >= b.ends_at"
        ).fetchone()
        assert leaks == (0,)
    finally:
        con.close()
