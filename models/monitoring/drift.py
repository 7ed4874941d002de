"""Data drift: the train window against one day, per user-day, impression, item-day and model score.

Why user-days and item-days rather than per-user aggregates over each whole window: the reference window is
the train split (weeks) and the current window one day, so per-user figures over the two windows differ in
spread by construction (a user's CTR over 3 impressions is far noisier than over 60). Aggregating both windows
per user *per day* compares like with like, so a flagged column means the behaviour moved, not the window.

The views have different grains, so they are stacked into one frame with NaN outside each view's rows;
Evidently drops NaN per column before its stattest, which gives one report, one drift share, one HTML page.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from models.data.warehouse import table_exists
from models.monitoring.charts import Chart, chart_path, drift_chart, embed_in_page
from models.monitoring.common import MONITORING_SCHEMA, as_day, day_column, ensure_schema, fmt
from models.monitoring.html_safe import html_safe
from models.settings import MonitoringSettings

DRIFT_TABLE = f"{MONITORING_SCHEMA}.drift_results"

# column -> (view, kind); the view names the grain of the rows the column is computed on.
DRIFT_COLUMNS: dict[str, tuple[str, str]] = {
    "user_impressions": ("user_day", "num"),
    "user_ctr": ("user_day", "num"),
    "user_avg_dwell": ("user_day", "num"),
    "user_top_category": ("user_day", "cat"),
    "user_group": ("user_day", "cat"),
    "user_region": ("user_day", "cat"),
    "impression_category": ("impression", "cat"),
    "impression_creator_group": ("impression", "cat"),
    # numeric 0/1 on purpose: the normed Wasserstein distance of a 0/1 column is |delta CTR| / std, an effect
    # size that flags a 60 % CTR drop, where Jensen-Shannon on two categories barely moves
    "label_clicked": ("impression", "num"),
    "item_ctr": ("item_day", "num"),
    "model_score": ("score", "num"),
}
MIN_VALUES_PER_COLUMN = 5  # fewer non-null values in either window: skip the column rather than guess


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift between the windows."""

    column: str
    view: str
    stattest: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    """The outcome of one drift report."""

    run_date: dt.date
    columns: list[ColumnDrift]
    drift_share: float
    threshold: float
    reference_rows: dict[str, int]
    current_rows: dict[str, int]
    skipped_columns: list[str] = field(default_factory=list)
    html_path: Path | None = None
    charts: list[Chart] = field(default_factory=list)

    @property
    def drift_detected(self) -> bool:
        """Whether the share of drifted columns passes the threshold."""
        return self.drift_share > self.threshold

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def run_id(self) -> str:
        """Deterministic id: the same day with the same figures gives the same id (the sensor's cursor)."""
        text = self.run_date.isoformat() + ";" + ";".join(f"{c.column}={c.score:.6g}" for c in self.columns)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def to_frame(self) -> pd.DataFrame:
        """Per-column results as a DataFrame."""
        return pd.DataFrame([c.__dict__ for c in self.columns])

    def message(self) -> str:
        """One line naming the share, the threshold and the drifted columns with their scores."""
        drifted = ", ".join(
            f"{c.column} ({c.stattest} {fmt(c.score, 3)} > {fmt(c.threshold, 2)})"
            for c in self.columns
            if c.drifted
        )
        verdict = "DRIFT" if self.drift_detected else "no drift"
        return (
            f"{verdict} on {self.run_date}: {sum(c.drifted for c in self.columns)}/{len(self.columns)} columns "
            f"drifted, share {fmt(self.drift_share, 3)} vs threshold {fmt(self.threshold, 3)}"
            + (f"; drifted: {drifted}" if drifted else "")
        )


def split_windows(
    interactions: pd.DataFrame, current_date: object | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dt.date]:
    """Reference (train split, minus the current day) and current (one day, default the latest) windows."""
    days = day_column(interactions["event_date"])
    day = pd.Timestamp(as_day(current_date)) if current_date is not None else days.max()
    current = interactions[days == day]
    reference = interactions[(interactions["split"] == "train") & (days != day)]
    if current.empty:
        raise ValueError(f"no interactions on {day.date()} to compare with the train window")
    if reference.empty:
        raise ValueError("the train split is empty: nothing to use as the drift reference")
    return reference, current, day.date()


def _user_day_view(window: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    grouped = window.groupby(["user_id", "_day"])
    view = grouped.agg(user_impressions=("clicked", "size"), clicks=("clicked", "sum"))
    view["user_ctr"] = view["clicks"] / view["user_impressions"]
    clicked = window[window["clicked"] == 1]
    # Dwell only means something after a click: average over clicked impressions (NaN without clicks).
    view["user_avg_dwell"] = clicked.groupby(["user_id", "_day"])["dwell_seconds"].mean()
    top = (
        clicked.groupby(["user_id", "_day", "category"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["user_id", "_day", "n", "category"], ascending=[True, True, False, True])
        .drop_duplicates(["user_id", "_day"])
        .set_index(["user_id", "_day"])["category"]
    )
    view["user_top_category"] = top
    view = view.reset_index().merge(users, on="user_id", how="left")
    view["user_impressions"] = view["user_impressions"].astype(float)
    return view.drop(columns=["clicks", "user_id", "_day"])


def _impression_view(window: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "impression_category": window["category"].to_numpy(),
            "impression_creator_group": window["creator_group"].to_numpy(),
            "label_clicked": window["clicked"].astype(float).to_numpy(),
        }
    )


def _item_day_view(window: pd.DataFrame) -> pd.DataFrame:
    ctr = window.groupby(["item_id", "_day"])["clicked"].mean().rename("item_ctr")
    return ctr.reset_index(drop=True).to_frame()


def _window_frame(
    window: pd.DataFrame, users: pd.DataFrame, scores: pd.Series | None, max_rows: int, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    views = {
        "user_day": _user_day_view(window, users),
        "impression": _impression_view(window),
        "item_day": _item_day_view(window),
    }
    if scores is not None:
        views["score"] = pd.DataFrame({"model_score": pd.to_numeric(scores, errors="coerce").to_numpy()})
    views = {
        name: view.sample(n=max_rows, random_state=seed) if len(view) > max_rows else view
        for name, view in views.items()
    }
    rows = {name: len(view) for name, view in views.items()}
    return pd.concat(views.values(), ignore_index=True), rows


def build_drift_frames(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame,
    item_features: pd.DataFrame,
    current_date: object | None = None,
    reference_scores: pd.Series | None = None,
    current_scores: pd.Series | None = None,
    max_rows: int = 200_000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dt.date, dict[str, int], dict[str, int]]:
    """The stacked reference and current frames the drift report compares, the current day and row counts."""
    items = item_features[["item_id", "category", "creator_group"]].drop_duplicates("item_id")
    data = interactions.merge(items, on="item_id", how="left").fillna(
        {"category": "unknown", "creator_group": "unknown"}
    )
    data["_day"] = day_column(data["event_date"])
    users = user_features[["user_id", "user_group", "region"]].rename(columns={"region": "user_region"})
    reference, current, day = split_windows(data, current_date)
    with_scores = reference_scores is not None and current_scores is not None
    ref_frame, ref_rows = _window_frame(
        reference, users, reference_scores if with_scores else None, max_rows, seed
    )
    cur_frame, cur_rows = _window_frame(
        current, users, current_scores if with_scores else None, max_rows, seed
    )
    return ref_frame, cur_frame, day, ref_rows, cur_rows


def _usable_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    usable, skipped = [], []
    for column in DRIFT_COLUMNS:
        if column not in reference or column not in current:
            skipped.append(column)  # no values at all in a window (e.g. no model scores yet)
            continue
        if min(reference[column].notna().sum(), current[column].notna().sum()) < MIN_VALUES_PER_COLUMN:
            skipped.append(column)
        else:
            usable.append(column)
    return usable, skipped


def _as_evidently_types(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame[columns].copy()
    for column in columns:
        if DRIFT_COLUMNS[column][1] == "cat":
            # object dtype with real NaN: Evidently counts a category per distinct value and drops NaN.
            out[column] = out[column].map(lambda v: str(v) if pd.notna(v) else np.nan).astype(object)
            out = html_safe(out, [column])  # Evidently embeds category values in its page unescaped
        else:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    return out


def run_drift_report(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame,
    item_features: pd.DataFrame,
    settings: MonitoringSettings,
    current_date: object | None = None,
    reference_scores: pd.Series | None = None,
    current_scores: pd.Series | None = None,
    html_path: Path | None = None,
    seed: int = 0,
) -> DriftResult:
    """Evidently ``DataDriftPreset`` of the train window against one day; saves the HTML when a path is given.

    ``reference_scores`` / ``current_scores`` feed the ``model_score`` column (see ``models.monitoring.scores``
    for why its reference is the validation window); without both, the column is listed as skipped.
    """
    ref, cur, day, ref_rows, cur_rows = build_drift_frames(
        interactions,
        user_features,
        item_features,
        current_date,
        reference_scores,
        current_scores,
        settings.drift_reference_max_rows,
        seed,
    )
    columns, skipped = _usable_columns(ref, cur)
    if not columns:
        raise ValueError("no column has enough values in both windows for a drift test")
    definition = DataDefinition(
        numerical_columns=[c for c in columns if DRIFT_COLUMNS[c][1] == "num"],
        categorical_columns=[c for c in columns if DRIFT_COLUMNS[c][1] == "cat"],
    )
    report = Report(
        [
            DataDriftPreset(
                columns=columns,
                num_method=settings.drift_num_stattest,
                cat_method=settings.drift_cat_stattest,
                threshold=settings.drift_stattest_threshold,
                drift_share=settings.drift_share_threshold,
            )
        ],
        include_tests=True,
    )
    snapshot = report.run(
        current_data=Dataset.from_pandas(_as_evidently_types(cur, columns), data_definition=definition),
        reference_data=Dataset.from_pandas(_as_evidently_types(ref, columns), data_definition=definition),
    )
    column_results = _column_results(snapshot.dict())
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    n_drifted = sum(c.drifted for c in column_results)
    result = DriftResult(
        run_date=day,
        columns=column_results,
        drift_share=n_drifted / len(column_results),
        threshold=settings.drift_share_threshold,
        reference_rows=ref_rows,
        current_rows=cur_rows,
        skipped_columns=skipped,
        html_path=html_path,
    )
    if html_path is not None:
        chart = drift_chart(
            result.to_frame(),
            chart_path(html_path, "columns"),
            f"Drift per column, train window vs {day} (share {result.drift_share:.2f})",
        )
        result.charts = [
            Chart("columns", chart, "Each column's drift score against its threshold; red: drifted.")
        ]
        embed_in_page(html_path, result.charts, f"recgen drift chart ({day})")
    return result


def _column_results(snapshot: dict) -> list[ColumnDrift]:
    """Per-column score, stattest and verdict from the snapshot (the verdict is Evidently's own test)."""
    failed = {
        t["bound_test"]["metric_fingerprint"]
        for t in snapshot.get("tests", [])
        if t.get("id") == "drift" and str(t.get("status")).upper().endswith("FAIL")
    }
    results = []
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if not config["type"].endswith(":ValueDrift"):
            continue
        column = config["column"]
        results.append(
            ColumnDrift(
                column=column,
                view=DRIFT_COLUMNS[column][0],
                stattest=str(config.get("method")),
                score=float(metric["value"]),
                threshold=float(config.get("threshold")),
                drifted=metric["id"] in failed,
            )
        )
    return results


def save_drift_result(con: duckdb.DuckDBPyConnection, result: DriftResult) -> int:
    """Replace ``monitoring.drift_results`` rows of the result's day with this result; returns rows written."""
    ensure_schema(con)
    con.execute(
        f"""
        create table if not exists {DRIFT_TABLE} (
            run_id varchar not null,
            run_date date not null,
            column_name varchar not null,
            view varchar not null,
            stattest varchar not null,
            score double not null,
            threshold double not null,
            drifted boolean not null,
            drift_share double not null,
            drift_share_threshold double not null,
            drift_detected boolean not null,
            html_path varchar,
            created_at timestamp not null
        )
        """
    )
    rows = result.to_frame().rename(columns={"column": "column_name"})
    rows.insert(0, "run_date", result.run_date)
    rows.insert(0, "run_id", result.run_id)
    rows["drift_share"] = result.drift_share
    rows["drift_share_threshold"] = result.threshold
    rows["drift_detected"] = result.drift_detected
    rows["html_path"] = str(result.html_path) if result.html_path else None
    rows["created_at"] = pd.Timestamp.now().floor("us")
    con.execute(f"delete from {DRIFT_TABLE} where run_date = ?", [result.run_date])
    con.register("drift_rows", rows)
    try:
        con.execute(
            f"""
            insert into {DRIFT_TABLE}
            select run_id, run_date, column_name, view, stattest, score, threshold, drifted, drift_share,
                   drift_share_threshold, drift_detected, html_path, created_at
            from drift_rows
            """
        )
    finally:
        con.unregister("drift_rows")
    return len(rows)


@dataclass(frozen=True)
class DriftRun:
    """The summary of one stored drift result, as the sensor and the check read it."""

    run_id: str
    run_date: dt.date
    drift_share: float
    drift_share_threshold: float
    n_columns: int
    drifted_columns: list[str]

    def passes(self, threshold: float) -> bool:
        """Whether the drift share is above ``threshold`` (the retraining trigger)."""
        return self.drift_share > threshold


def latest_drift_run(con: duckdb.DuckDBPyConnection, day: dt.date | None = None) -> DriftRun | None:
    """The latest stored drift result of ``day`` (default: of the latest day); None when there is none."""
    if not table_exists(con, DRIFT_TABLE):
        return None
    row = con.execute(
        f"""
        select run_id, run_date, any_value(drift_share), any_value(drift_share_threshold), count(*),
               list(column_name order by column_name) filter (where drifted)
        from {DRIFT_TABLE}
        where run_date = coalesce(cast(? as date), (select max(run_date) from {DRIFT_TABLE}))
        group by run_id, run_date
        order by max(created_at) desc
        limit 1
        """,
        [day],
    ).fetchone()
    if row is None:
        return None
    return DriftRun(
        run_id=str(row[0]),
        run_date=as_day(row[1]),
        drift_share=float(row[2]),
        drift_share_threshold=float(row[3]),
        n_columns=int(row[4]),
        drifted_columns=list(row[5] or []),
    )
