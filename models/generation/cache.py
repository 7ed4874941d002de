"""The generation cache: one row per (item content hash, profile segment, task, style, generator version).

Generation looks here first, so a re-run (or another user in the same segment) only generates what is
missing. The key uses the item's content hash, so an edited item is regenerated, and the generator version
(model version + decoding signature), so a retrained model or other decoding never serves stale text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd

CACHE_TABLE = "generation.content_cache"
KEY_COLUMNS = ("content_hash", "segment", "task", "style", "model_version")


@dataclass(frozen=True)
class CacheKey:
    """What makes two generations interchangeable."""

    content_hash: str
    segment: str
    task: str
    style: str
    model_version: str


@dataclass(frozen=True)
class CacheEntry:
    """A stored generation: the published text and how it was obtained."""

    key: CacheKey
    text: str
    passed_guardrails: bool
    fallback_reason: str | None
    n_tokens: int
    latency_ms: float


def ensure_cache_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create schema ``generation`` and the cache table if missing."""
    con.execute("create schema if not exists generation")
    con.execute(
        f"""
        create table if not exists {CACHE_TABLE} (
            content_hash varchar not null,
            segment varchar not null,
            task varchar not null,
            style varchar not null,
            model_version varchar not null,
            text varchar not null,
            passed_guardrails boolean not null,
            fallback_reason varchar,
            n_tokens integer not null,
            latency_ms double not null,
            created_at timestamp not null,
            primary key (content_hash, segment, task, style, model_version)
        )
        """
    )


def _keys_frame(keys: Iterable[CacheKey]) -> pd.DataFrame:
    rows = [(k.content_hash, k.segment, k.task, k.style, k.model_version) for k in dict.fromkeys(keys)]
    return pd.DataFrame(rows, columns=list(KEY_COLUMNS))


def lookup(con: duckdb.DuckDBPyConnection, keys: Iterable[CacheKey]) -> dict[CacheKey, CacheEntry]:
    """The cached entries for ``keys`` (missing keys are absent from the result)."""
    ensure_cache_table(con)
    wanted = _keys_frame(keys)
    if wanted.empty:
        return {}
    con.register("_wanted_cache_keys", wanted)
    try:
        rows = con.execute(
            f"""
            select c.content_hash, c.segment, c.task, c.style, c.model_version,
                   c.text, c.passed_guardrails, c.fallback_reason, c.n_tokens, c.latency_ms
            from {CACHE_TABLE} c
            join _wanted_cache_keys w using (content_hash, segment, task, style, model_version)
            """
        ).fetchall()
    finally:
        con.unregister("_wanted_cache_keys")
    out: dict[CacheKey, CacheEntry] = {}
    for row in rows:
        key = CacheKey(*row[:5])
        out[key] = CacheEntry(key, row[5], bool(row[6]), row[7], int(row[8]), float(row[9]))
    return out


def store(con: duckdb.DuckDBPyConnection, entries: Iterable[CacheEntry]) -> int:
    """Insert or replace ``entries``; returns how many rows were written."""
    ensure_cache_table(con)
    rows = [
        {
            "content_hash": e.key.content_hash,
            "segment": e.key.segment,
            "task": e.key.task,
            "style": e.key.style,
            "model_version": e.key.model_version,
            "text": e.text,
            "passed_guardrails": e.passed_guardrails,
            "fallback_reason": e.fallback_reason,
            "n_tokens": e.n_tokens,
            "latency_ms": e.latency_ms,
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
        for e in entries
    ]
    if not rows:
        return 0
    return write_frame(con, pd.DataFrame(rows).drop_duplicates(subset=list(KEY_COLUMNS), keep="last"))


def cache_size(con: duckdb.DuckDBPyConnection, model_version: str | None = None) -> int:
    """Rows in the cache (for one generator version when given)."""
    ensure_cache_table(con)
    if model_version is None:
        row = con.execute(f"select count(*) from {CACHE_TABLE}").fetchone()
    else:
        row = con.execute(
            f"select count(*) from {CACHE_TABLE} where model_version = ?", [model_version]
        ).fetchone()
    return int(row[0]) if row else 0


def read_frame(con: duckdb.DuckDBPyConnection, model_version: str) -> pd.DataFrame:
    """Every cached row of one generator version (to work on a copy without holding the warehouse)."""
    ensure_cache_table(con)
    return con.execute(f"select * from {CACHE_TABLE} where model_version = ?", [model_version]).df()


def write_frame(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
    """Insert or replace the rows of ``frame`` (columns of the cache table); returns the row count."""
    ensure_cache_table(con)
    if frame.empty:
        return 0
    con.register("_cache_frame", frame)
    try:
        con.execute(f"insert or replace into {CACHE_TABLE} by name select * from _cache_frame")
    finally:
        con.unregister("_cache_frame")
    return len(frame)


def new_rows(after: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``after`` whose key is not in ``before`` (what a run added to its copy of the cache)."""
    if before.empty or after.empty:
        return after
    keys = list(KEY_COLUMNS)
    merged = after.merge(before[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    return merged[merged["_merge"] == "left_only"].drop(columns="_merge").reset_index(drop=True)
