"""DuckDB access shared by the pipeline, the service and the tests.

DuckDB allows one read-write process per database file at a time, and a read-only open fails while another
process holds it read-write. Every process therefore opens the file through :func:`connect`, which holds an
exclusive OS lock (``<db>.lock``) for the life of the connection: overlapping Dagster runs (scheduled,
sensor-started and manual) queue on the lock instead of failing with DuckDB's "Could not set lock" error.
Dagster's run queue (``dagster.yaml``: tag concurrency on ``recgen/duckdb``) serializes whole runs where the
daemon is running; this lock covers the CLI and in-process runs that bypass the queue.

DuckDB's memory grows with the data (ingest and ``dbt build`` of 14.8M events peaked at 6 and 12 GB):
``settings.duckdb_memory_limit`` (and ``duckdb_temp_directory``, where it spills past the limit, and
``duckdb_max_temp_directory_size``, how much it may spill there) apply to the connections opened with
:func:`duckdb_config` and, through the environment of :func:`dbt_env`, to dbt's (``dbt_project/profiles.yml``).
Unset or empty, DuckDB's defaults hold (80% of RAM, ``<file>.tmp``, 90% of the available disk space).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from models.settings import Settings


class WarehouseLockTimeout(TimeoutError):
    """Another process held the DuckDB write lock for longer than the timeout."""


@contextmanager
def exclusive_lock(database: Path, timeout_s: float = 1800.0) -> Iterator[None]:
    """Hold the cross-process lock of ``database`` (blocking, polled) until the block exits."""
    database = Path(database)
    database.parent.mkdir(parents=True, exist_ok=True)
    lock_path = database.with_suffix(database.suffix + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseLockTimeout(
                        f"{lock_path} held by another process for {timeout_s}s"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def duckdb_config(settings: Settings) -> dict[str, str]:
    """The DuckDB settings of ``settings`` for :func:`connect` (only those set: empty means DuckDB's default)."""
    config = {}
    if settings.duckdb_memory_limit:
        config["memory_limit"] = settings.duckdb_memory_limit
    if settings.duckdb_temp_directory:
        config["temp_directory"] = str(Path(settings.duckdb_temp_directory).resolve())
    if settings.duckdb_max_temp_directory_size:
        config["max_temp_directory_size"] = settings.duckdb_max_temp_directory_size
    return config


def dbt_env(settings: Settings) -> dict[str, str]:
    """Environment variables ``dbt_project/profiles.yml`` reads: the DuckDB file and its memory settings.

    Absolute paths, since dbt runs in ``dbt_project/``; an empty value keeps DuckDB's default there too.
    """
    config = duckdb_config(settings)
    return {
        "RECGEN_DUCKDB_PATH": str(settings.database.resolve()),
        "RECGEN_DUCKDB_MEMORY_LIMIT": config.get("memory_limit", ""),
        "RECGEN_DUCKDB_TEMP_DIRECTORY": config.get("temp_directory", ""),
        "RECGEN_DUCKDB_MAX_TEMP_DIRECTORY_SIZE": config.get("max_temp_directory_size", ""),
    }


@contextmanager
def connect(
    database: Path, timeout_s: float = 1800.0, config: Mapping[str, str] | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to ``database``, holding its cross-process lock while open.

    ``config`` (from :func:`duckdb_config`) is applied with ``SET`` on the new connection.
    """
    with exclusive_lock(database, timeout_s):
        con = duckdb.connect(str(database))
        try:
            for key, value in (config or {}).items():
                current = con.execute("select current_setting(?)", [key]).fetchone()[0]
                # DuckDB refuses to switch temp_directory once it spilled there (even to the same path)
                if key != "temp_directory" or current != str(value):
                    con.execute(f"SET {key} = '{str(value).replace(chr(39), chr(39) * 2)}'")
            yield con
        finally:
            con.close()


def table_exists(con: duckdb.DuckDBPyConnection, qualified_name: str) -> bool:
    """Whether ``schema.table`` exists in the connected database."""
    schema, _, table = qualified_name.rpartition(".")
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema or "main", table],
    ).fetchone()
    return bool(row and row[0])
