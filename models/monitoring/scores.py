"""The champion's scores per day, and the reference they are compared with for score drift.

``monitoring.daily_scores`` holds, for each day partition, the score the champion ``full_stack`` model gives each
impression of that day (ranker + weighted retrieval logit, what it ranks by when serving), with the click
label beside it. ``monitoring.score_reference`` holds the same model version's scores on a sample of the
validation window. The validation window is the reference, not the train window: the ranker was fit on
train impressions, so its in-sample scores sit apart from any later day's and score drift would always fire;
validation impressions were only used for early stopping and the retrieval-weight grid.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd

from models.data.warehouse import table_exists
from models.monitoring.common import MONITORING_SCHEMA, ensure_schema

if TYPE_CHECKING:
    from models.recommender import FullStackModel

SCORES_TABLE = f"{MONITORING_SCHEMA}.daily_scores"
REFERENCE_TABLE = f"{MONITORING_SCHEMA}.score_reference"
REFERENCE_SPLIT = "valid"
IMPRESSION_COLUMNS = ["request_id", "user_id", "item_id", "position", "clicked"]


def score_impressions(
    model: FullStackModel, impressions: pd.DataFrame, batch_size: int = 8192
) -> pd.DataFrame:
    """``impressions`` (request_id, user_id, item_id, position, clicked) with the model's ``score``.

    Pairs whose user or item the model does not know score NaN (the model cannot rank them either).
    """
    frame = impressions[IMPRESSION_COLUMNS].reset_index(drop=True)
    scores = np.full(len(frame), np.nan)
    users = frame["user_id"].astype(str).tolist()
    items = frame["item_id"].astype(str).tolist()
    for start in range(0, len(frame), batch_size):
        stop = start + batch_size
        scores[start:stop] = model.score(users[start:stop], items[start:stop])
    return frame.assign(score=scores)


def reference_sample(interactions: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` impressions of the validation window, sampled with ``seed``."""
    window = interactions[interactions["split"] == REFERENCE_SPLIT]
    if len(window) > max_rows:
        window = window.sample(n=max_rows, random_state=seed)
    return window[IMPRESSION_COLUMNS].reset_index(drop=True)


def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_schema(con)
    con.execute(
        f"""
        create table if not exists {SCORES_TABLE} (
            event_date date not null, model_version varchar not null, request_id varchar, user_id varchar,
            item_id varchar, position integer, clicked integer, score double
        )"""
    )
    con.execute(
        f"""
        create table if not exists {REFERENCE_TABLE} (
            model_version varchar not null, split varchar not null, request_id varchar, user_id varchar,
            item_id varchar, position integer, clicked integer, score double
        )"""
    )


def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> int:
    con.register("_recgen_scores", frame)
    try:
        columns = ", ".join(frame.columns)
        con.execute(f"insert into {table} ({columns}) select {columns} from _recgen_scores")
    finally:
        con.unregister("_recgen_scores")
    return len(frame)


def save_day_scores(
    con: duckdb.DuckDBPyConnection, day: dt.date, model_version: str, scored: pd.DataFrame
) -> int:
    """Replace the day's rows of ``monitoring.daily_scores`` with ``scored``; returns the row count."""
    _create_tables(con)
    con.execute(f"delete from {SCORES_TABLE} where event_date = ?", [day])
    return _insert(con, SCORES_TABLE, scored.assign(event_date=day, model_version=model_version))


def has_reference(con: duckdb.DuckDBPyConnection, model_version: str) -> bool:
    """Whether ``monitoring.score_reference`` holds this model version's reference scores."""
    if not table_exists(con, REFERENCE_TABLE):
        return False
    row = con.execute(f"select count(*) from {REFERENCE_TABLE} where model_version = ?", [model_version])
    return bool(row.fetchone()[0])  # type: ignore[index]


def save_reference(con: duckdb.DuckDBPyConnection, model_version: str, scored: pd.DataFrame) -> int:
    """Replace the reference scores of ``model_version``; returns the row count."""
    _create_tables(con)
    con.execute(f"delete from {REFERENCE_TABLE} where model_version = ?", [model_version])
    return _insert(con, REFERENCE_TABLE, scored.assign(model_version=model_version, split=REFERENCE_SPLIT))


def read_score_windows(
    con: duckdb.DuckDBPyConnection, day: dt.date
) -> tuple[pd.Series | None, pd.Series | None, str | None]:
    """(reference scores, the day's scores, model version) for score drift; Nones when either is missing.

    The reference is the one of the model version that scored the day, so both windows come from one model.
    """
    if not table_exists(con, SCORES_TABLE) or not table_exists(con, REFERENCE_TABLE):
        return None, None, None
    current = con.execute(
        f"select model_version, score from {SCORES_TABLE} where event_date = ? and score is not null", [day]
    ).df()
    if current.empty:
        return None, None, None
    version = str(current["model_version"].iloc[0])
    reference = con.execute(
        f"select score from {REFERENCE_TABLE} where model_version = ? and score is not null", [version]
    ).df()
    if reference.empty:
        return None, None, version
    return reference["score"], current["score"], version
