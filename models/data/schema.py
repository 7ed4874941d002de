"""The raw schema every dataset (simulator, MovieLens, MIND) is mapped to before it lands in DuckDB.

These column lists are the contract between the loaders, the ingest step and dbt's sources
(``dbt_project/models/staging/_sources.yml``).
"""

from __future__ import annotations

from dataclasses import dataclass

EVENT_TYPES = ("impression", "click", "dwell", "rating")
CREATOR_GROUPS = ("large", "independent")
STYLES = ("concise", "casual", "formal", "enthusiastic")
LIST_SEPARATOR = "|"  # tags and declared interests are stored as 'a|b|c'


@dataclass(frozen=True)
class Column:
    name: str
    duckdb_type: str
    nullable: bool = False


@dataclass(frozen=True)
class TableSchema:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    # Whether DuckDB enforces ``key`` with a PRIMARY KEY. Ingest's validation keeps keys unique either way
    # (and dbt's source tests check it); the index of a 50M-row key costs gigabytes of memory and most of
    # the insert time, so the event stream goes without one.
    primary_key: bool = True

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def create_sql(self, schema: str = "raw") -> str:
        cols = ", ".join(f"{c.name} {c.duckdb_type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns)
        key = f", PRIMARY KEY ({', '.join(self.key)})" if self.primary_key else ""
        return f"CREATE TABLE IF NOT EXISTS {schema}.{self.name} ({cols}{key})"


USERS = TableSchema(
    name="users",
    key=("user_id",),
    columns=(
        Column("user_id", "VARCHAR"),
        Column("user_group", "VARCHAR"),  # demographic group, e.g. age band
        Column("region", "VARCHAR"),
        Column(
            "gender", "VARCHAR", nullable=True
        ),  # as the dataset spells it (MovieLens 'M' / 'F'); null when unknown
        Column("occupation", "VARCHAR", nullable=True),  # e.g. 'technician'; null when unknown
        Column("preferred_style", "VARCHAR", nullable=True),  # one of STYLES
        Column("declared_interests", "VARCHAR", nullable=True),  # 'cat_a|cat_b'
        Column("signup_at", "TIMESTAMP"),
    ),
)

ITEMS = TableSchema(
    name="items",
    key=("item_id",),
    columns=(
        Column("item_id", "VARCHAR"),
        Column("title", "VARCHAR"),
        Column("body", "VARCHAR"),
        Column("category", "VARCHAR"),
        Column("tags", "VARCHAR", nullable=True),  # 'tag_a|tag_b'
        Column("creator_id", "VARCHAR"),
        Column("creator_group", "VARCHAR"),  # one of CREATOR_GROUPS (or 'unknown' for real data)
        Column("published_at", "TIMESTAMP"),
    ),
)

EVENTS = TableSchema(
    name="events",
    key=("event_id",),
    primary_key=False,
    columns=(
        Column("event_id", "VARCHAR"),
        Column("request_id", "VARCHAR"),  # one feed request / slate; clicks share their impression's
        Column("user_id", "VARCHAR"),
        Column("item_id", "VARCHAR"),
        Column("event_type", "VARCHAR"),  # one of EVENT_TYPES
        Column("event_ts", "TIMESTAMP"),
        Column("position", "INTEGER", nullable=True),  # 0-based slot in the slate (impressions, clicks)
        Column("dwell_seconds", "DOUBLE", nullable=True),  # dwell events
        Column("rating", "DOUBLE", nullable=True),  # rating events, 1..5
    ),
)

RAW_TABLES: dict[str, TableSchema] = {t.name: t for t in (USERS, ITEMS, EVENTS)}

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS raw.quarantine (
    batch_id VARCHAR NOT NULL,
    source_table VARCHAR NOT NULL,
    source_row BIGINT NOT NULL,
    field VARCHAR,
    reason VARCHAR NOT NULL,
    record VARCHAR NOT NULL,
    quarantined_at TIMESTAMP NOT NULL
)
"""

BATCHES_DDL = """
CREATE TABLE IF NOT EXISTS raw.ingest_batches (
    batch_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    rows_in BIGINT NOT NULL,
    rows_clean BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    rows_duplicate BIGINT DEFAULT 0  -- repeated event_ids: skipped, not quarantined (in = clean + q + dup)
)
"""
