"""A tiny handmade warehouse and a real `dbt build` of dbt_project/ on it, shared by the dbt tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from models.data.schema import RAW_TABLES

ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = ROOT / "dbt_project"
DBT_EXECUTABLE = Path(sys.prefix) / "bin" / "dbt"
# The split knobs as the orchestration passes them (models.settings.SplitSettings defaults).
BUILD_VARS = "{valid_days: 2, test_days: 2, negatives_per_positive: 4}"


def ts(day: int, clock: str) -> datetime:
    """A timestamp on 2026-10-<day> at 'HH:MM[:SS]'."""
    parts = [int(p) for p in clock.split(":")] + [0]
    return datetime(2026, 10, day, parts[0], parts[1], parts[2])


USERS = [
    # user_id, user_group, region, gender, occupation, preferred_style, declared_interests, signup_at
    ("u1", "18-29", "north", "F", "writer", "casual", "news|sports", ts(1, "00:00")),
    ("u2", "30-44", "south", None, None, None, None, ts(1, "00:00")),  # gender, occupation unknown
    # u3 never shows up in events: user_features must still have a row for it (cold start).
    ("u3", "45+", "north", "M", "engineer", "formal", "tech", ts(1, "00:00")),
]

ITEMS = [
    # item_id, title, body, category, tags, creator_id, creator_group, published_at
    ("i1", "Title one", "Body one", "news", "a|b", "c1", "large", datetime(2026, 9, 30, 0, 0)),
    ("i2", "Title two", "Body two", "sports", "b", "c2", "independent", datetime(2026, 9, 30, 0, 0)),
    ("i3", "Title three", "Body three", "news", "c", "c1", "large", datetime(2026, 9, 30, 12, 0)),
    # Real datasets (MIND) may have no tags and no creator: tags null, creator_group 'unknown'.
    ("i4", "Title four", "Body four", "tech", None, "unknown", "unknown", datetime(2026, 10, 1, 0, 0)),
]


def _slate(request_id: str, user_id: str, when: datetime, items: list[str]) -> list[tuple]:
    """One impression per item, in slot order, as the feed logs a request."""
    return [
        (f"{request_id}-imp-{item}", request_id, user_id, item, "impression", when, pos, None, None)
        for pos, item in enumerate(items)
    ]


def _click(
    request_id: str, user_id: str, item: str, when: datetime, dwell: float | None = None
) -> list[tuple]:
    """A click (and its dwell event when dwell is given) on an item of a request's slate."""
    rows = [(f"{request_id}-clk-{item}", request_id, user_id, item, "click", when, None, None, None)]
    if dwell is not None:
        rows.append((f"{request_id}-dwl-{item}", request_id, user_id, item, "dwell", when, None, dwell, None))
    return rows


def _rated(request_id: str, user_id: str, item: str, when: datetime, rating: float) -> list[tuple]:
    """A MovieLens-mapped rating: impression without a slot, the rating, and a click when rating >= 4."""
    rows = [
        (f"{request_id}-imp-{item}", request_id, user_id, item, "impression", when, None, None, None),
        (f"{request_id}-rat-{item}", request_id, user_id, item, "rating", when, None, None, rating),
    ]
    if rating >= 4:
        rows.append((f"{request_id}-clk-{item}", request_id, user_id, item, "click", when, None, None, None))
    return rows


# Six days, Oct 1-6. With valid_days = test_days = 2: train Oct 1-2, valid Oct 3-4, test Oct 5-6.
EVENTS = [
    *_slate("r1", "u1", ts(1, "09:00"), ["i1", "i2", "i3"]),
    *_click("r1", "u1", "i1", ts(1, "09:00:10"), dwell=40.0),
    *_slate("r2", "u2", ts(1, "12:00"), ["i1", "i2"]),
    *_click("r2", "u2", "i2", ts(1, "12:00:05"), dwell=20.0),
    *_slate("r3", "u1", ts(2, "08:00"), ["i2", "i3", "i4"]),
    *_click("r3", "u1", "i3", ts(2, "08:00:20"), dwell=10.0),
    *_rated("r4", "u2", "i4", ts(2, "10:00"), 5.0),
    *_rated("r5", "u2", "i3", ts(2, "10:00"), 2.0),
    *_slate("r6", "u1", ts(3, "09:00"), ["i1", "i4"]),
    *_click("r6", "u1", "i4", ts(3, "09:00:30")),
    # No click: a request without positives gives no training samples.
    *_slate("r7", "u2", ts(4, "20:00"), ["i1", "i3"]),
    *_slate("r8", "u1", ts(5, "07:00"), ["i2", "i3", "i1", "i4"]),
    *_click("r8", "u1", "i2", ts(5, "07:00:15"), dwell=5.0),
    *_slate("r9", "u2", ts(6, "23:30"), ["i1", "i2"]),
    *_click("r9", "u2", "i1", ts(6, "23:59:50")),
]


def create_raw_tables(database: Path) -> None:
    """Create raw.users/items/events with the ingest DDL and load the handmade rows."""
    con = duckdb.connect(str(database))
    try:
        con.execute("create schema if not exists raw")
        for table in RAW_TABLES.values():
            con.execute(table.create_sql())
        for name, rows in (("users", USERS), ("items", ITEMS), ("events", EVENTS)):
            marks = ", ".join("?" for _ in RAW_TABLES[name].columns)
            con.executemany(f"insert into raw.{name} values ({marks})", rows)
    finally:
        con.close()


@dataclass(frozen=True)
class DbtRun:
    returncode: int
    output: str


def run_dbt(args: list[str], project_dir: Path, database: Path, work_dir: Path) -> DbtRun:
    """Run the real dbt CLI on project_dir against database, with target/ and logs/ under work_dir."""
    env = {
        **os.environ,
        "RECGEN_DUCKDB_PATH": str(database),
        "DBT_TARGET_PATH": str(work_dir / "target"),
        "DBT_LOG_PATH": str(work_dir / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    env.pop("RECGEN_DBT_TARGET", None)
    proc = subprocess.run(
        [str(DBT_EXECUTABLE), *args, "--profiles-dir", str(project_dir), "--project-dir", str(project_dir)],
        cwd=work_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return DbtRun(proc.returncode, proc.stdout + proc.stderr)


@dataclass(frozen=True)
class BuiltWarehouse:
    database: Path
    build: DbtRun

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        """Rows of sql, read-only, so a failed test cannot change the shared warehouse."""
        con = duckdb.connect(str(self.database), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


@pytest.fixture(scope="session")
def built_warehouse(tmp_path_factory: pytest.TempPathFactory) -> BuiltWarehouse:
    """One `dbt build` of the real project on the handmade raw tables, shared by every dbt test."""
    work_dir = tmp_path_factory.mktemp("dbt_build")
    database = work_dir / "recgen.duckdb"
    create_raw_tables(database)
    build = run_dbt(["build", "--vars", BUILD_VARS], DBT_PROJECT_DIR, database, work_dir)
    return BuiltWarehouse(database=database, build=build)


@pytest.fixture
def dbt_runner() -> Callable[[list[str], Path, Path, Path], DbtRun]:
    """The dbt CLI runner, for tests that build their own projects."""
    return run_dbt
