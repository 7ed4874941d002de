"""Drift report: a shifted last day is flagged on the columns that moved; a same-process day flags nothing.

The worlds are sized like the default simulator's day (about 1,250 active user-days and 12,000 impressions on
the current day, 800 items): the sampling noise of the normed Wasserstein and Jensen-Shannon distances then
stays under half of the 0.1 threshold, so "no drift" is not a coin flip.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from models.monitoring.drift import (
    DRIFT_COLUMNS,
    latest_drift_run,
    run_drift_report,
    save_drift_result,
    split_windows,
)
from models.settings import MonitoringSettings
from tests.models.monitoring.conftest import START, make_world

SIZE = {"n_users": 2000, "n_items": 800, "n_days": 6}
LAST_DAY = (START + pd.Timedelta(days=SIZE["n_days"] - 1)).date()


def _report(world: dict[str, pd.DataFrame], settings: MonitoringSettings, **kwargs: object):
    return run_drift_report(
        world["interactions"], world["user_features"], world["item_features"], settings, **kwargs
    )


@pytest.fixture(scope="module")
def settings() -> MonitoringSettings:
    return MonitoringSettings()


@pytest.fixture(scope="module")
def steady_world() -> dict[str, pd.DataFrame]:
    return make_world(**SIZE, seed=11)


@pytest.fixture(scope="module")
def steady_result(steady_world, settings: MonitoringSettings, tmp_path_factory: pytest.TempPathFactory):
    return _report(steady_world, settings, html_path=tmp_path_factory.mktemp("drift") / "drift.html")


@pytest.mark.slow
def test_same_process_new_sample_flags_nothing(steady_result, settings: MonitoringSettings) -> None:
    result = steady_result
    html = result.html_path

    # every column of the contract is tested (no scores given, so no model_score column)
    assert {c.column for c in result.columns} == set(DRIFT_COLUMNS) - {"model_score"}
    assert result.drifted_columns == [], result.message()
    assert result.drift_share == 0.0 and not result.drift_detected
    assert max(c.score for c in result.columns) < settings.drift_stattest_threshold
    assert result.run_date == LAST_DAY
    assert (
        html is not None and html.exists() and html.stat().st_size > 100_000
    )  # Evidently's self-contained page (JS inlined)


@pytest.mark.slow
def test_category_flood_flags_category_share_not_ctr(settings: MonitoringSettings) -> None:
    # "news" takes 70 % of the last day's slots instead of 25 %. Users' favourites are uniform over the four
    # categories, so the chance a slot matches a favourite, i.e. the overall CTR, stays 0.25 * 0.7 + 0.75 * 0.1
    # = 0.25: the label must not drift. Per-user CTR does spread (news fans match 70 % of slots, others 10 %).
    world = make_world(**SIZE, seed=12, last_day_category_weights=(0.7, 0.1, 0.1, 0.1))
    result = _report(world, settings)

    drifted = set(result.drifted_columns)
    assert "impression_category" in drifted, result.message()
    assert "user_top_category" in drifted  # users now click news most often
    assert "label_clicked" not in drifted, result.message()
    # who is active and how many feeds they ask for did not change
    assert not drifted & {"user_impressions", "user_group", "user_region"}


@pytest.mark.slow
def test_click_drop_flags_label_and_ctr_columns(settings: MonitoringSettings) -> None:
    # every click is 60 % less likely on the last day: the label and both CTR views move, the feed mix does not
    world = make_world(**SIZE, seed=13, last_day_click_scale=0.4)
    result = _report(world, settings)

    drifted = set(result.drifted_columns)
    assert {"label_clicked", "user_ctr", "item_ctr"} <= drifted, result.message()
    assert not drifted & {"impression_category", "impression_creator_group", "user_group", "user_region"}
    # 3 or more of 10 columns: the share must pass the 0.3 threshold only if strictly above it
    assert result.drift_share == pytest.approx(len(drifted) / len(result.columns))
    assert result.drift_detected == (result.drift_share > settings.drift_share_threshold)
    assert "label_clicked" in result.message()


def test_windows_reference_is_train_without_the_current_day() -> None:
    world = make_world(n_users=60, n_items=40, n_days=5, test_days=2)
    inter = world["interactions"]
    reference, current, day = split_windows(inter, "2026-10-02")

    assert day == dt.date(2026, 10, 2)
    assert set(pd.to_datetime(current["event_date"]).dt.date) == {day}
    # train is days 0-2; the chosen day (day 1) is taken out of the reference
    assert set(reference["split"]) == {"train"}
    assert day not in set(pd.to_datetime(reference["event_date"]).dt.date)
    assert len(reference) == int(
        ((inter["split"] == "train") & (inter["event_date"] != pd.Timestamp(day))).sum()
    )
    with pytest.raises(ValueError, match="no interactions"):
        split_windows(inter, "2030-01-01")


@pytest.mark.slow
def test_score_distribution_drift_only_when_scores_move(settings: MonitoringSettings) -> None:
    # a small world: only the model_score column is judged here
    world = make_world(n_users=300, n_items=100, n_days=4, seed=14)
    rng = np.random.default_rng(3)
    reference_scores = pd.Series(rng.normal(0, 1, 5000))
    same = _report(
        world,
        settings,
        reference_scores=reference_scores,
        current_scores=pd.Series(rng.normal(0, 1, 2000)),
    )
    # half a standard deviation: the normed Wasserstein distance is about 0.5, far above 0.1
    moved = _report(
        world,
        settings,
        reference_scores=reference_scores,
        current_scores=pd.Series(rng.normal(0.5, 1, 2000)),
    )
    assert "model_score" in {c.column for c in same.columns}
    assert "model_score" not in same.drifted_columns
    assert "model_score" in moved.drifted_columns
    assert next(c.score for c in moved.columns if c.column == "model_score") == pytest.approx(0.5, abs=0.1)


@pytest.mark.slow
def test_results_persist_and_replace_per_day(steady_result) -> None:
    result = steady_result
    con = duckdb.connect()
    assert latest_drift_run(con) is None  # no table yet

    written = save_drift_result(con, result)
    save_drift_result(con, result)  # the same day again replaces, not appends
    rows = con.execute("select count(*), count(distinct run_id) from monitoring.drift_results").fetchone()
    assert written == len(result.columns) and rows == (written, 1)

    stored = latest_drift_run(con)
    assert stored is not None
    assert stored.run_id == result.run_id
    assert stored.run_date == result.run_date
    assert stored.drift_share == pytest.approx(result.drift_share)
    assert stored.n_columns == len(result.columns)
    assert stored.drifted_columns == sorted(result.drifted_columns)
    scores = con.execute("select column_name, score from monitoring.drift_results").df()
    assert dict(zip(scores["column_name"], scores["score"], strict=True)) == pytest.approx(
        {c.column: c.score for c in result.columns}
    )
