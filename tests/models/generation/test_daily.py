"""Daily inputs and output: active users, stored recommendations as of a day, marts profiles, stored rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import duckdb

from models.generation import daily
from models.generation.samples import sample_profile
from models.generation.service import GeneratedContent
from tests.models.generation.warehouse import DAY, build_warehouse


def test_inputs_of_a_day(tmp_path: Path) -> None:
    build_warehouse(tmp_path / "w.duckdb")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    # most active first; u4 had events only the day before
    assert daily.active_users(con, DAY, 10) == ["u1", "u2", "u3"]
    assert daily.active_users(con, DAY, 2) == ["u1", "u2"]
    recs = daily.stored_recommendations(con, ["u1", "u2"], DAY, top_n=3)
    # u1's list of DAY (the list of the next day is ignored), best rank first, cut to 3
    assert recs[recs.user_id == "u1"].item_id.tolist() == ["i0006", "i0000", "i0007"]
    assert recs[recs.user_id == "u2"].item_id.tolist() == ["i0004", "i0010"]
    profiles = daily.profiles_from_marts(con, ["u1", "u2"], DAY)
    # u1: two sports clicks and one travel click up to DAY (the later one is not seen)
    assert profiles["u1"].top_categories[0] == ("sports", 2 / 3) and not profiles["u1"].cold_start
    assert profiles["u1"].preferred_style == "casual" and profiles["u1"].n_events == 3
    # u2 has no engagements: cold start from the declared interests
    assert profiles["u2"].cold_start and [c for c, _ in profiles["u2"].top_categories] == ["food", "music"]


def test_without_recommendations_table(tmp_path: Path) -> None:
    build_warehouse(tmp_path / "w.duckdb", with_recommendations=False)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert daily.stored_recommendations(con, ["u1"], DAY, 3) is None
    profiles = daily.profiles_from_marts(con, ["u1"], DAY)
    recs = daily.popular_recommendations(con, profiles, 2)
    # the two most popular sports items (popularity grows with the item number; sports = every 6th item)
    assert recs.item_id.tolist() == ["i0006", "i0000"]


def test_store_content_replaces_the_day(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    row = GeneratedContent("u1", "i1", "blurb", "casual", "text", False, "ungrounded: X", "v", 1.0, 3, False)
    ok = GeneratedContent("u1", "i2", "blurb", "casual", "text", True, None, "v", 1.0, 3, True)
    assert daily.store_content(con, DAY, [row, ok]) == 2
    assert daily.store_content(con, DAY, [ok]) == 1  # a re-run replaces the partition
    assert daily.store_content(con, DAY + dt.timedelta(days=1), [row]) == 1
    assert con.execute(f"select count(*) from {daily.CONTENT_TABLE}").fetchone() == (2,)
    assert daily.rows_without_reason(con) == 0
    con.execute(f"update {daily.CONTENT_TABLE} set fallback_reason = null where not passed_guardrails")
    assert daily.rows_without_reason(con) == 1


def test_profiles_from_the_user_profiles_table(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert daily.stored_profiles(con, ["u1"]) is None  # no table yet: the caller falls back
    stored = sample_profile("u1", ["travel", "food"], "enthusiastic")
    con.execute("create schema ml")
    con.execute("create table ml.user_profiles (user_id varchar, profile varchar)")
    con.execute(
        "insert into ml.user_profiles values (?, ?), ('u9', null)", ["u1", json.dumps(stored.to_dict())]
    )
    found = daily.stored_profiles(con, ["u1", "u2"])
    # the JSON round-trips to the same profile (tuples come back as tuples via from_dict)
    assert found == {"u1": stored}


def test_the_latest_day_counts_each_generation_once(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))

    def row(user: str, item: str, text: str, cached: bool) -> GeneratedContent:
        return GeneratedContent(user, item, "blurb", "casual", text, True, None, "v", 1.0, 3, cached)

    # u1 and u2 share segment s1 (one generation, served twice); u3 is in s2 with the same text
    rows = [
        row("u1", "i1", "A text.", False),
        row("u2", "i1", "A text.", True),
        row("u3", "i1", "A text.", False),
    ]
    daily.store_content(con, DAY, rows, ["casual:s1", "casual:s1", "casual:s2"])
    day, read = daily.latest_day_rows(con)
    assert day == DAY and [r.cached for r in read] == [False, True, False]
    # a re-run serves every row from the cache: still one generation per segment, not zero
    daily.store_content(
        con, DAY, [dataclasses.replace(r, cached=True) for r in rows], ["casual:s1"] * 2 + ["casual:s2"]
    )
    assert [r.cached for r in daily.latest_day_rows(con)[1]] == [False, True, False]
    # rows stored without segments (older warehouses) each count
    daily.store_content(con, DAY, rows)
    assert [r.cached for r in daily.latest_day_rows(con)[1]] == [False, False, False]
