"""Great Expectations suites for the raw tables and the marts (GX 1.x API).

Each suite is declared once in :data:`SUITES` as a table, a SQL that reads it and a list of expectations;
:func:`validate_table` runs one against a DuckDB connection. GX validates a pandas frame, so large tables
are validated on a deterministic sample of ``settings.quality.sample_rows`` rows, while the checks that need
every row (row count, key uniqueness) are expectations on SQL aggregates over the whole table.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from models.data.schema import CREATOR_GROUPS, EVENT_TYPES
from models.settings import QualitySettings

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class Suite:
    """An expectation suite bound to the table it validates."""

    name: str
    table: str  # qualified DuckDB table
    key: tuple[str, ...]
    expectations: Callable[[QualitySettings], list[Any]]
    min_rows: Callable[[QualitySettings], int] = lambda q: 1
    # Extra derived columns computed in SQL over the whole table (e.g. per-user monotonic time).
    derived_sql: str | None = None
    blocking: bool = True
    description: str = ""


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    observed: Any


@dataclass
class QualityResult:
    """The outcome of one suite on one table."""

    suite: str
    table: str
    success: bool
    rows: int
    rows_validated: int
    outcomes: list[ExpectationOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        """One line per failed expectation, naming the column and what was observed."""
        if self.success:
            return f"{self.suite}: {len(self.outcomes)} expectations passed on {self.rows_validated} rows"
        lines = [f"{self.suite}: {len(self.failures)} of {len(self.outcomes)} expectations failed"]
        lines += [f"- {o.expectation}({o.column or ''}): observed {o.observed}" for o in self.failures]
        return "\n".join(lines)


def _gxe() -> Any:
    import great_expectations.expectations as gxe

    return gxe


def _raw_users(q: QualitySettings) -> list[Any]:
    gxe = _gxe()
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_group"),
        gxe.ExpectColumnValuesToNotBeNull(column="signup_at"),
    ]


def _raw_items(q: QualitySettings) -> list[Any]:
    gxe = _gxe()
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="title"),
        gxe.ExpectColumnValuesToNotBeNull(column="body"),
        gxe.ExpectColumnValuesToBeInSet(column="creator_group", value_set=[*CREATOR_GROUPS, "unknown"]),
    ]


def _raw_events(q: QualitySettings) -> list[Any]:
    gxe = _gxe()
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="event_ts"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToBeBetween(column="dwell_seconds", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5),
        gxe.ExpectColumnValuesToBeBetween(column="position", min_value=0),
    ]


def _training_samples(q: QualitySettings) -> list[Any]:
    gxe = _gxe()
    features = [
        "user_prior_impressions",
        "user_prior_clicks",
        "user_prior_ctr",
        "item_prior_impressions",
        "item_prior_clicks",
        "item_prior_ctr",
    ]
    return [
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "valid", "test"]),
        gxe.ExpectColumnValuesToBeBetween(column="user_prior_ctr", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="item_prior_ctr", min_value=0, max_value=1),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=1 - q.max_null_share) for c in features],
        gxe.ExpectColumnValuesToBeInSet(column="features_before_event", value_set=[True]),
    ]


def _user_histories(q: QualitySettings) -> list[Any]:
    gxe = _gxe()
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        # seq orders a user's history; its timestamps must never go back in time.
        gxe.ExpectColumnValuesToBeInSet(column="ts_monotonic_in_user", value_set=[True]),
    ]


def _interactions(q: QualitySettings) -> list[Any]:
    gxe = _gxe()
    return [
        gxe.ExpectColumnValuesToBeInSet(column="clicked", value_set=[0, 1]),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "valid", "test"]),
        gxe.ExpectColumnValuesToBeBetween(column="dwell_seconds", min_value=0),
    ]


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "raw_users",
            "raw.users",
            ("user_id",),
            _raw_users,
            lambda q: q.min_users,
            description="users land complete",
        ),
        Suite(
            "raw_items",
            "raw.items",
            ("item_id",),
            _raw_items,
            lambda q: q.min_items,
            description="catalog rows are usable",
        ),
        Suite(
            "raw_events",
            "raw.events",
            ("event_id",),
            _raw_events,
            lambda q: q.min_events,
            description="events are well-formed",
        ),
        Suite(
            "interactions",
            "marts.interactions",
            ("request_id", "item_id"),
            _interactions,
            description="labels and splits are valid",
        ),
        Suite(
            "user_histories",
            "marts.user_histories",
            ("user_id", "seq"),
            _user_histories,
            derived_sql="event_ts >= coalesce(lag(event_ts) over (partition by user_id order by seq), event_ts)"
            " as ts_monotonic_in_user",
            description="histories are time-ordered per user",
        ),
        Suite(
            "training_samples",
            "marts.training_samples",
            ("request_id", "item_id"),
            _training_samples,
            derived_sql="features_as_of is null or features_as_of < event_ts as features_before_event",
            description="features are point-in-time and complete",
        ),
    )
}


def _key_duplicates(con: duckdb.DuckDBPyConnection, suite: Suite) -> int:
    key = ", ".join(suite.key)
    return int(
        con.execute(
            f"select coalesce(sum(n - 1), 0) from (select count(*) n from {suite.table} group by {key})"
        ).fetchone()[0]
    )


def _sample(con: duckdb.DuckDBPyConnection, suite: Suite, rows: int, sample_rows: int) -> pd.DataFrame:
    derived = f", {suite.derived_sql}" if suite.derived_sql else ""
    # The derived columns use window functions over the whole table, so compute them before sampling.
    base = f"select *{derived} from {suite.table}"
    if rows <= sample_rows:
        return con.execute(base).df()
    return con.execute(
        f"select * from ({base}) using sample reservoir({sample_rows} rows) repeatable (42)"
    ).df()


def validate_table(con: duckdb.DuckDBPyConnection, suite: Suite, settings: QualitySettings) -> QualityResult:
    """Run ``suite`` on its table through GX; key uniqueness and row count are checked on every row."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    rows = int(con.execute(f"select count(*) from {suite.table}").fetchone()[0])
    frame = _sample(con, suite, rows, settings.sample_rows)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas(f"{suite.name}_source")
        .add_dataframe_asset(suite.name)
        .add_batch_definition_whole_dataframe("whole")
    )
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.name))
    for expectation in suite.expectations(settings):
        gx_suite.add_expectation(expectation)
    result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(gx_suite)

    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        observed = r.result.get("observed_value", r.result.get("unexpected_count"))
        if "partial_unexpected_list" in r.result and not r.success:
            observed = {
                "unexpected_count": r.result.get("unexpected_count"),
                "examples": r.result["partial_unexpected_list"][:5],
            }
        outcomes.append(ExpectationOutcome(cfg.type, cfg.kwargs.get("column"), bool(r.success), observed))
    # Row count and key uniqueness need every row, so they run in SQL on the whole table, not the sample.
    min_rows = suite.min_rows(settings)
    outcomes.append(
        ExpectationOutcome("row_count_at_least", None, rows >= min_rows, {"rows": rows, "min": min_rows})
    )
    duplicates = _key_duplicates(con, suite)
    outcomes.append(
        ExpectationOutcome(
            "key_is_unique", ",".join(suite.key), duplicates == 0, {"duplicate_rows": duplicates}
        )
    )
    success = all(o.success for o in outcomes)
    return QualityResult(suite.name, suite.table, success, rows, len(frame), outcomes)
