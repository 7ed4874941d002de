"""Validated loading of raw tables into DuckDB, with a quarantine for every rejected row.

Rows arrive as text (every column is read as VARCHAR) so that a wrong type is a finding about the row rather
than a crash of the batch. Each row gets the first rule it breaks as its ``reason`` and the offending
``field``; clean rows go to ``raw.<table>``, the others to ``raw.quarantine`` with the whole record as JSON.
Events are idempotent on ``event_id``: a repeated ``event_id`` (within a file, across the files of a batch, or
already in ``raw.events``) is a retry of an event already stored, so it is skipped and counted as a duplicate,
not quarantined as bad. A repeated user or item key is quarantined (two different records for one key).
Nothing is lost: ``rows_in == rows_clean + rows_quarantined + rows_duplicate`` for every batch, and the batch
ledger ``raw.ingest_batches`` records the four counts.

The checks run as SQL inside DuckDB, so a 50M-event Parquet snapshot is validated without loading it into
Python. A snapshot is validated and committed in steps of whole Parquet parts of at most ``ROWS_PER_STEP`` rows,
so the validation's memory is that of one step rather than of the snapshot, and each step's key checks are hash
joins built on the step's rows (the stored table is scanned, never hashed). The result is the same as validating
the whole snapshot at once: rows are numbered across parts, the first copy of a key wins, and a key met in an
earlier step of the same batch is a duplicate "within batch".
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from models.data.schema import (
    BATCHES_DDL,
    EVENT_TYPES,
    EVENTS,
    ITEMS,
    QUARANTINE_DDL,
    RAW_TABLES,
    USERS,
    TableSchema,
)
from models.progress import EpochProgress

log = logging.getLogger(__name__)

# Load order matters: events are checked against the users and items already accepted.
LOAD_ORDER = ("users", "items", "events")
RATING_RANGE = (1.0, 5.0)
# Tables whose key identifies one occurrence (a retried write carries the same key): repeats are skipped.
IDEMPOTENT_TABLES = frozenset({"events"})
# Parquet parts are validated and committed in steps of about this many rows (whole parts): few enough steps
# that the scans of the stored table stay cheap, small enough that a step fits DuckDB's memory limit.
ROWS_PER_STEP = 4_000_000


@dataclass
class TableReport:
    """Counts for one table of one batch."""

    table: str
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    rows_duplicate: int = 0  # repeats of a key already stored (idempotent tables only): skipped, not bad


@dataclass
class IngestReport:
    """What one ingest batch did, per table."""

    batch_id: str
    tables: dict[str, TableReport]

    @property
    def rows_quarantined(self) -> int:
        return sum(t.rows_quarantined for t in self.tables.values())

    @property
    def rows_duplicate(self) -> int:
        return sum(t.rows_duplicate for t in self.tables.values())


def create_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``raw`` schema, its tables, the quarantine and the batch ledger if missing."""
    con.execute("create schema if not exists raw")
    for table in RAW_TABLES.values():
        con.execute(table.create_sql())
        # Tables created before a nullable column was added to the schema gain it (null for their rows).
        for col in table.columns:
            if col.nullable:
                con.execute(
                    f"alter table raw.{table.name} add column if not exists {col.name} {col.duckdb_type}"
                )
    con.execute(QUARANTINE_DDL)
    con.execute(BATCHES_DDL)
    # Ledgers written before duplicates were counted apart gain the column (0 for their batches).
    con.execute("alter table raw.ingest_batches add column if not exists rows_duplicate BIGINT default 0")


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _blank(ref: str) -> str:
    """SQL: ``ref`` is null, empty or only what ``trim`` removes (as ``trim(ref) = ''``, a few times faster).

    ``trim`` never removes an ASCII letter or digit, so it only runs on values that start with another character.
    """
    alnum = (
        f"ascii({ref}) between 48 and 57 or ascii({ref}) between 65 and 90 or ascii({ref}) between 97 and 122"
    )
    return f"({ref} is null or {ref} = '' or (not ({alnum}) and trim({ref}) = ''))"


def _rules(table: TableSchema, now: datetime) -> list[tuple[str, str, str]]:
    """(field, SQL condition that marks the row bad, SQL expression of the reason) in priority order.

    The conditions read the all-VARCHAR staging relation ``b``; the first that holds names the row's reason.
    """
    rules: list[tuple[str, str, str]] = []
    for col in table.columns:
        name = col.name
        if not col.nullable:
            rules.append((name, _blank(f"b.{name}"), _sql_literal(f"missing {name}")))
        if col.duckdb_type != "VARCHAR":
            rules.append(
                (
                    name,
                    f"not {_blank(f'b.{name}')} and try_cast(b.{name} as {col.duckdb_type}) is null",
                    f"'{name}: cannot parse ''' || b.{name} || ''' as {col.duckdb_type}'",
                )
            )
    now_sql = f"timestamp '{now.replace(tzinfo=None).isoformat(sep=' ')}'"
    for col in table.columns:
        if col.duckdb_type == "TIMESTAMP":
            rules.append(
                (
                    col.name,
                    f"try_cast(b.{col.name} as TIMESTAMP) > {now_sql}",
                    f"'{col.name}: future timestamp ' || b.{col.name}",
                )
            )
    if table is EVENTS:
        allowed = ", ".join(_sql_literal(t) for t in EVENT_TYPES)
        rules += [
            (
                "event_type",
                f"b.event_type not in ({allowed})",
                "'event_type: unknown value ''' || b.event_type || ''''",
            ),
            (
                "dwell_seconds",
                "try_cast(b.dwell_seconds as DOUBLE) < 0",
                "'dwell_seconds: negative dwell ' || b.dwell_seconds",
            ),
            (
                "rating",
                f"try_cast(b.rating as DOUBLE) not between {RATING_RANGE[0]} and {RATING_RANGE[1]}",
                f"'rating: outside {RATING_RANGE[0]:g}..{RATING_RANGE[1]:g}: ' || b.rating",
            ),
            (
                "position",
                "try_cast(b.position as INTEGER) < 0",
                "'position: negative ' || b.position",
            ),
            (
                "user_id",
                "b.user_id not in (select user_id from raw.users)",
                "'user_id: unknown user ''' || b.user_id || ''''",
            ),
            (
                "item_id",
                "b.item_id not in (select item_id from raw.items)",
                "'item_id: unknown item ''' || b.item_id || ''''",
            ),
        ]
    return rules


def _ruled_sql(table: TableSchema, source: str, first_row: int, now: datetime) -> str:
    """SQL giving every incoming row its ``source_row`` (from ``first_row``), its columns as text and ``_rule``.

    ``_rule`` is the 1-based index in :func:`_rules` of the first rule the row breaks (null when clean), so
    the conditions are evaluated once per row; the field and reason are looked up from it afterwards.
    """
    rules = _rules(table, now)
    cols = ", ".join(f"cast({c} as VARCHAR) as {c}" for c in table.column_names)
    rule_case = " ".join(f"when {cond} then {i}" for i, (_, cond, _) in enumerate(rules, start=1))
    return f"""
        select b.*, case {rule_case} end as _rule
        from (select row_number() over () + {int(first_row) - 1} as source_row, {cols} from {source}) b
    """


def _checked_sql(table: TableSchema, now: datetime) -> str:
    """SQL over ``_ruled`` and the key tables ``_repeat``/``_known``/``_in_batch``: each row's field, reason, ``_dup``.

    A clean row whose key has a clean copy with a lower source_row in this step (``_repeat``), was committed by
    an earlier step of the batch (``_in_batch``) or is already in the table (``_known``) is a repeat: skipped
    (``_dup``) for an idempotent table, quarantined otherwise. Duplicates are judged among the rows that pass
    every other rule, so a bad first copy does not make a good second copy a duplicate.
    """
    rules = _rules(table, now)
    key_label = ",".join(table.key)
    using = ", ".join(table.key)
    fields = "[" + ", ".join(_sql_literal(f) for f, _, _ in rules) + "]"
    reason_case = " ".join(f"when {i} then {reason}" for i, (_, _, reason) in enumerate(rules, start=1))
    within = "(b._rule is null and (d.first_row is not null and b.source_row > d.first_row or ib._hit))"
    known = "(b._rule is null and kn._hit)"
    if table.name in IDEMPOTENT_TABLES:
        dup_field = dup_reason = "null"
        dup = f"coalesce({within} or {known}, false)"
    else:
        dup_field = f"case when {within} or {known} then {_sql_literal(key_label)} end"
        dup_reason = (
            f"case when {within} then {_sql_literal(f'duplicate {key_label} within batch')} "
            f"when {known} then {_sql_literal(f'duplicate {key_label} already ingested')} end"
        )
        dup = "false"
    return f"""
        select b.* exclude (_rule),
            case when b._rule is not null then {fields}[b._rule] else {dup_field} end as _field,
            case when b._rule is not null then (case b._rule {reason_case} end) else {dup_reason} end
                as _reason,
            {dup} as _dup
        from _ruled b
        left join _repeat d using ({using})
        left join _known kn using ({using})
        left join _in_batch ib using ({using})
    """


def _source(con: duckdb.DuckDBPyConnection, table: TableSchema, part: pd.DataFrame | list[Path]) -> str:
    """A relation over one step's incoming rows: the DataFrame as text (registered), or its Parquet files."""
    if isinstance(part, pd.DataFrame):
        frame = part.copy()
        for c in table.column_names:
            if c not in frame.columns:
                frame[c] = None
        # Object columns may mix types (a loader keeps unparseable values as they were): make all text.
        text = frame[table.column_names].astype(object).where(frame[table.column_names].notna(), None)
        text = text.map(lambda v: None if v is None else str(v))
        con.register("_incoming", text)
        return "_incoming"
    files = ", ".join(_sql_literal(str(p)) for p in part)
    return f"read_parquet([{files}], union_by_name = true)"


def _steps(files: list[Path], rows_per_step: int) -> list[list[Path]]:
    """Consecutive Parquet parts grouped into steps of at most ``rows_per_step`` rows (at least one part each)."""
    steps: list[list[Path]] = []
    rows = 0
    for path in files:
        n = pq.ParquetFile(path).metadata.num_rows
        if steps and rows + n <= rows_per_step:
            steps[-1].append(path)
            rows += n
        else:
            steps.append([path])
            rows = n
    return steps


def ingest_table(
    con: duckdb.DuckDBPyConnection,
    table_name: str,
    rows: pd.DataFrame | list[Path],
    *,
    batch_id: str,
    source: str,
    now: datetime | None = None,
    rows_per_step: int = ROWS_PER_STEP,
) -> TableReport:
    """Validate ``rows`` for ``raw.<table_name>``; insert the clean ones, quarantine the rest.

    Parquet parts are validated and committed in steps of at most ``rows_per_step`` rows (whole parts; rows
    numbered across them), so memory is that of one step; a DataFrame is one step. A repeated key of an
    idempotent table (``event_id``) is skipped and counted in ``rows_duplicate``.
    """
    table = RAW_TABLES[table_name]
    now = now or datetime.now(UTC)
    create_raw_schema(con)
    steps: list[pd.DataFrame | list[Path]] = (
        [rows] if isinstance(rows, pd.DataFrame) else list(_steps(list(rows), rows_per_step))
    )
    key_cols = ", ".join(table.key)
    r_keys = ", ".join(f"r.{k}" for k in table.key)
    on_table = " and ".join(f"t.{k} = r.{k}" for k in table.key)
    # Keys this batch committed in earlier steps (users, items): later steps see them as "within batch", so
    # the result equals a whole-batch check. An idempotent table needs no list: a repeat is skipped whether
    # it is in the table or the batch, and the table holds the earlier steps' rows.
    con.execute(
        f"create or replace temp table _batch_keys as select {key_cols} from raw.{table.name} limit 0"
    )
    casts = ", ".join(f"cast({c.name} as {c.duckdb_type})" for c in table.columns)
    record = "to_json(struct_pack(" + ", ".join(f"{c} := {c}" for c in table.column_names) + "))"
    rows_in = rows_bad = rows_dup = 0
    reasons: dict[str, int] = {}
    progress = EpochProgress(f"ingest raw.{table.name}", total=len(steps), log=log, unit="step")
    for i, step in enumerate(steps):
        source_sql = _source(con, table, step)
        con.execute(
            f"create or replace temp table _ruled as {_ruled_sql(table, source_sql, rows_in + 1, now)}"
        )
        if isinstance(step, pd.DataFrame):
            con.unregister("_incoming")
        # The three key lists are small (repeats are rare) and each is one hash join built on this step's
        # rows: the table is only scanned, never hashed, so a step costs the same at 1M or 50M stored rows.
        con.execute(
            f"create or replace temp table _repeat as select {key_cols}, min(source_row) as first_row "
            f"from _ruled where _rule is null group by {key_cols} having count(*) > 1"
        )
        con.execute(
            f"create or replace temp table _known as select distinct {r_keys}, true as _hit "
            f"from _ruled r join raw.{table.name} t on {on_table} where r._rule is null"
        )
        con.execute(
            f"create or replace temp table _in_batch as select distinct {r_keys}, true as _hit "
            f"from _ruled r join _batch_keys t on {on_table} where r._rule is null"
        )
        con.execute(f"create or replace temp table _checked as {_checked_sql(table, now)}")
        con.execute("drop table _ruled")
        if i + 1 < len(steps) and table.name not in IDEMPOTENT_TABLES:
            con.execute(
                f"insert into _batch_keys select {key_cols} from _checked where _reason is null and not _dup"
            )
        con.execute(
            f"insert into raw.{table.name} ({', '.join(table.column_names)}) "
            f"select {casts} from _checked where _reason is null and not _dup"
        )
        con.execute(
            f"""insert into raw.quarantine
                select ?, ?, source_row, _field, _reason, {record}, ? from _checked where _reason is not null""",
            [batch_id, table.name, now.replace(tzinfo=None)],
        )
        part_in, part_bad, part_dup = con.execute(
            "select count(*), count(*) filter (where _reason is not null), count(*) filter (where _dup) "
            "from _checked"
        ).fetchone()
        rows_in, rows_bad, rows_dup = rows_in + part_in, rows_bad + part_bad, rows_dup + part_dup
        if part_bad:
            for reason, count in con.execute(
                # Group by the kind of problem, without the offending value: 'rating: outside 1..5'.
                "select trim(regexp_replace(_reason, '(: )?(''.*''|-?[0-9][0-9.]*)$', '')), count(*) "
                "from _checked where _reason is not null group by 1"
            ).fetchall():
                reasons[reason] = reasons.get(reason, 0) + int(count)
        for temp in ("_checked", "_repeat", "_known", "_in_batch"):
            con.execute(f"drop table {temp}")
        if len(steps) > 1:
            progress.step(rows_in=rows_in, quarantined=rows_bad, duplicates=rows_dup)
    con.execute("drop table _batch_keys")
    rows_clean = rows_in - rows_bad - rows_dup
    con.execute(
        "insert into raw.ingest_batches (batch_id, source, table_name, rows_in, rows_clean, rows_quarantined, "
        "rows_duplicate, ingested_at) values (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            batch_id + ":" + table.name,
            source,
            table.name,
            rows_in,
            rows_clean,
            rows_bad,
            rows_dup,
            now.replace(tzinfo=None),
        ],
    )
    return TableReport(
        table.name,
        int(rows_in),
        int(rows_clean),
        int(rows_bad),
        dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        int(rows_dup),
    )


def ingest_snapshot(
    con: duckdb.DuckDBPyConnection,
    files: dict[str, list[Path]],
    *,
    source: str,
    replace: bool = True,
    now: datetime | None = None,
    rows_per_step: int = ROWS_PER_STEP,
) -> IngestReport:
    """Load a raw snapshot (Parquet parts per table), replacing the raw tables when ``replace``.

    The parts are validated and committed in steps of at most ``rows_per_step`` rows (see :func:`ingest_table`).
    """
    create_raw_schema(con)
    batch_id = _new_batch_id()
    if replace:
        # Children first: events reference users and items only by value, but a clean reload keeps the
        # quarantine and ledger history while the raw tables hold exactly the current snapshot.
        for name in reversed(LOAD_ORDER):
            con.execute(f"delete from raw.{name}")
    reports = {
        name: ingest_table(
            con,
            name,
            list(files[name]),
            batch_id=batch_id,
            source=source,
            now=now,
            rows_per_step=rows_per_step,
        )
        for name in LOAD_ORDER
        if files.get(name)
    }
    return IngestReport(batch_id, reports)


SNAPSHOT_STATE_DDL = """
create table if not exists raw.snapshot_state (
    snapshot_key varchar not null,
    batch_id varchar not null,
    loaded_at timestamp not null
)"""


def loaded_snapshot_key(con: duckdb.DuckDBPyConnection) -> str | None:
    """The key of the snapshot the raw tables hold (``sources.snapshot_key``); None before the first load."""
    create_raw_schema(con)
    con.execute(SNAPSHOT_STATE_DDL)
    row = con.execute(
        "select snapshot_key from raw.snapshot_state order by loaded_at desc limit 1"
    ).fetchone()
    return str(row[0]) if row else None


def record_snapshot(con: duckdb.DuckDBPyConnection, key: str, batch_id: str) -> None:
    """Remember that the raw tables now hold the snapshot ``key`` (loaded by batch ``batch_id``)."""
    con.execute(SNAPSHOT_STATE_DDL)
    con.execute("delete from raw.snapshot_state")
    con.execute(
        "insert into raw.snapshot_state values (?, ?, ?)",
        [key, batch_id, datetime.now(UTC).replace(tzinfo=None)],
    )


def pending_inbox_files(inbox: Path) -> list[Path]:
    """Files waiting in ``inbox/<table>/`` (``inbox/processed/`` holds the ones already ingested)."""
    return sorted(p for p in inbox.glob("*/*") if p.is_file() and p.parent.name != "processed")


def read_inbox_file(path: Path) -> tuple[str, pd.DataFrame, list[tuple[int, str]]]:
    """Read one inbox file (``<table>/*.jsonl|csv|parquet``): (table, rows as text, malformed lines)."""
    table = path.parent.name
    if table not in RAW_TABLES:
        raise ValueError(f"{path}: inbox files must sit in a folder named one of {sorted(RAW_TABLES)}")
    columns = RAW_TABLES[table].column_names
    malformed: list[tuple[int, str]] = []
    if path.suffix == ".jsonl":
        records: list[dict[str, object]] = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
                records.append(value)
            except ValueError as exc:
                malformed.append((line_no, f"malformed JSON on line {line_no}: {exc}"))
        frame = (
            pd.DataFrame.from_records(records, columns=columns) if records else pd.DataFrame(columns=columns)
        )
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False).replace({"": None})
    elif path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise ValueError(
            f"{path}: unsupported inbox file type {path.suffix!r} (use .jsonl, .csv or .parquet)"
        )
    return table, frame, malformed


def ingest_inbox(
    con: duckdb.DuckDBPyConnection, paths: Iterable[Path], *, now: datetime | None = None
) -> IngestReport:
    """Append new rows from inbox files: repeated event_ids are skipped and counted, bad lines quarantined."""
    create_raw_schema(con)
    batch_id = _new_batch_id()
    now = now or datetime.now(UTC)
    by_table: dict[str, list[pd.DataFrame]] = {}
    malformed_counts: dict[str, int] = {}
    for path in sorted(paths):
        table, frame, malformed = read_inbox_file(path)
        by_table.setdefault(table, []).append(frame)
        malformed_counts[table] = malformed_counts.get(table, 0) + len(malformed)
        for line_no, reason in malformed:
            con.execute(
                "insert into raw.quarantine values (?, ?, ?, null, ?, ?, ?)",
                [batch_id, table, line_no, reason, json.dumps({"file": str(path)}), now.replace(tzinfo=None)],
            )
    reports = {}
    for name in LOAD_ORDER:
        if name in by_table:
            frame = pd.concat(by_table[name], ignore_index=True)
            report = ingest_table(con, name, frame, batch_id=batch_id, source="inbox", now=now)
            # Lines that were not even JSON are rows too: count them in, so in == clean + quarantined holds.
            if bad := malformed_counts.get(name, 0):
                report.rows_in += bad
                report.rows_quarantined += bad
                report.reasons["malformed JSON"] = bad
            reports[name] = report
    return IngestReport(batch_id, reports)


def _new_batch_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


__all__ = [
    "IngestReport",
    "TableReport",
    "create_raw_schema",
    "ingest_inbox",
    "ingest_snapshot",
    "ingest_table",
    "pending_inbox_files",
    "read_inbox_file",
    "USERS",
    "ITEMS",
    "EVENTS",
]
