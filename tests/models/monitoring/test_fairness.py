"""Fairness figures against plain pandas / hand computations, and the check on biased and fair lists."""

from __future__ import annotations

import math
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from models.monitoring.common import mean_ndcg, ndcg_per_user
from models.monitoring.fairness import (
    evaluate_fairness,
    exposure_by_group,
    exposure_gini,
    gini,
    largest_gap,
    quality_by_group,
)
from models.monitoring.fairness_report import (
    SECTION_TITLES,
    latest_fairness,
    run_fairness_report,
    save_fairness_metrics,
)
from models.settings import MonitoringSettings
from tests.models.monitoring.conftest import make_recs


def loop_ndcg(recs: pd.DataFrame, relevant: pd.DataFrame, k: int) -> dict[str, float]:
    """NDCG@k per user written out as the textbook loop (independent of the vectorized implementation)."""
    out = {}
    for user, rel_items in relevant.groupby("user_id")["item_id"]:
        rel = set(rel_items)
        ranked = recs[recs["user_id"] == user].sort_values("rank")
        dcg = sum(
            1 / math.log2(r + 1)
            for r, i in zip(ranked["rank"], ranked["item_id"], strict=True)
            if r <= k and i in rel
        )
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
        out[user] = dcg / idcg
    return out


@pytest.fixture(scope="module")
def small_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three users, lists of four; u3 has no recommendations at all (counts as NDCG 0)."""
    recs = pd.DataFrame(
        {
            "user_id": ["u1"] * 4 + ["u2"] * 4,
            "item_id": ["a", "b", "c", "d", "b", "a", "e", "f"],
            "rank": [1, 2, 3, 4] * 2,
            "score": [0.9, 0.8, 0.7, 0.6] * 2,
        }
    )
    relevant = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["a", "c", "f", "a"]})
    return recs, relevant


def test_ndcg_per_user_by_hand(small_case) -> None:
    recs, relevant = small_case
    got = ndcg_per_user(recs, relevant, k=3).set_index("user_id")["ndcg"]
    # u1: hits at ranks 1 and 3 -> (1 + 1/log2 4) / (1 + 1/log2 3); u2: its hit is at rank 4 > k=3 -> 0
    assert got["u1"] == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3)))
    assert got["u2"] == 0.0 and got["u3"] == 0.0
    assert got.to_dict() == pytest.approx(loop_ndcg(recs, relevant, 3))
    # at k=4 u2's hit counts: 1/log2(5) over an ideal single hit of 1
    assert ndcg_per_user(recs, relevant, 4).set_index("user_id")["ndcg"]["u2"] == pytest.approx(
        1 / math.log2(5)
    )


def test_gini_by_hand() -> None:
    assert gini([1, 1, 1, 1]) == 0.0  # perfectly equal
    # sorted x = [0, 0, 0, 1]: sum((2i - n - 1) x_i) / (n sum x) = (2*4 - 5) * 1 / (4 * 1) = 3/4
    assert gini([0, 1, 0, 0]) == pytest.approx(0.75)
    # [1, 2, 3, 4]: (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 10 / 40
    assert gini([4, 2, 3, 1]) == pytest.approx(0.25)
    assert gini([]) == 0.0 and gini([0, 0]) == 0.0


def test_exposure_gini_counts_never_shown_items() -> None:
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "creator_group": ["large"] * 4})
    recs = pd.DataFrame(
        {"user_id": ["u1", "u2", "u3"], "item_id": ["a"] * 3, "rank": [1] * 3, "score": [1.0] * 3}
    )
    # exposure per catalog item is [3, 0, 0, 0]: the one-item-takes-all case of n = 4, i.e. 3/4
    assert exposure_gini(recs, items, k=10) == pytest.approx(0.75)


def test_exposure_by_group_by_hand() -> None:
    items = pd.DataFrame(
        {"item_id": list("abcdefghij"), "creator_group": ["large"] * 6 + ["independent"] * 4}
    )
    # five users, two slots each: nine slots go to large items, one to an independent one (item g)
    recs = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{i}" for i in range(5)], 3),
            "item_id": ["a", "b", "g", "a", "c", "h", "b", "d", "i", "e", "g", "j", "f", "a", "h"],
            "rank": [1, 2, 3] * 5,
            "score": [3.0, 2.0, 1.0] * 5,
        }
    )
    relevant = pd.DataFrame({"user_id": ["u0", "u1", "u2", "u3"], "item_id": ["g", "h", "a", "b"]})
    table = exposure_by_group(recs, items, k=2, relevant=relevant).set_index("group")

    assert table.loc["independent", "exposure_slots"] == 1 and table.loc["large", "exposure_slots"] == 9
    assert table.loc["independent", "exposure_share"] == pytest.approx(0.1)
    assert table.loc["independent", "catalog_share"] == pytest.approx(0.4)
    assert table.loc["independent", "relevant_share"] == pytest.approx(0.5)  # g and h of four relevant pairs
    assert table.loc["independent", "gap_vs_catalog"] == pytest.approx(-0.3)
    assert table.loc["large", "gap_vs_catalog"] == pytest.approx(0.3)


def test_quality_by_group_matches_pandas(world) -> None:
    recs, relevant = make_recs(world, group_quality={"55+": 0.0}, seed=1)
    users, inter = world["user_features"], world["interactions"]
    test_inter = inter[inter["split"] == "test"]
    for attribute in ("user_group", "region"):
        table = quality_by_group(recs, relevant, users, attribute, 10, test_inter).set_index("group")

        per_user = pd.Series(loop_ndcg(recs, relevant, 10), name="ndcg").rename_axis("user_id").reset_index()
        expected = per_user.merge(users, on="user_id").groupby(attribute)["ndcg"].agg(["mean", "size", "std"])
        logged = test_inter.merge(users, on="user_id").groupby(attribute)["clicked"].agg(["mean", "size"])

        assert table["ndcg@10"].to_dict() == pytest.approx(expected["mean"].to_dict())
        assert table["n_users"].to_dict() == expected["size"].to_dict()
        # the error bars of the report's chart: 95 % normal interval of each group's mean
        ci95 = 1.96 * expected["std"] / np.sqrt(expected["size"])
        assert table["ndcg@10_ci95"].to_dict() == pytest.approx(ci95.to_dict())
        assert table["ctr"].to_dict() == pytest.approx(logged["mean"].to_dict())
        assert table["impressions"].to_dict() == logged["size"].to_dict()
        gap = largest_gap(table.reset_index(), attribute, "ndcg@10")
        assert gap is not None and gap.gap == pytest.approx(expected["mean"].max() - expected["mean"].min())


def test_biased_recommendations_fail_and_name_the_gaps(
    world, monitoring_settings: MonitoringSettings
) -> None:
    # The model barely lifts the relevant items of users aged 55+ and pushes independent creators down.
    recs, relevant = make_recs(world, group_quality={"55+": 0.0}, independent_penalty=1.5)
    result = evaluate_fairness(
        recs,
        relevant,
        world["user_features"],
        world["item_features"],
        k=10,
        ndcg_gap_threshold=monitoring_settings.ndcg_gap_threshold,
        exposure_gap_threshold=monitoring_settings.exposure_gap_threshold,
        min_group_users=monitoring_settings.min_group_users,
    )
    per_user = pd.Series(loop_ndcg(recs, relevant, 10), name="ndcg").rename_axis("user_id").reset_index()
    by_group = per_user.merge(world["user_features"], on="user_id").groupby("user_group")["ndcg"].mean()
    shown = recs[recs["rank"] <= 10].merge(world["item_features"], on="item_id")
    named = result.exposure_gap.group
    exposure_share = (shown["creator_group"] == named).mean()
    catalog_share = (world["item_features"]["creator_group"] == named).mean()  # 30 or 50 of 80 items

    assert not result.passed and not result.ndcg_ok and not result.exposure_ok
    message = result.message()
    assert message.startswith("fairness FAIL")
    worst = result.worst_ndcg_gap
    assert worst is not None and worst.attribute == "user_group" and worst.low_group == "55+"
    assert worst.gap == pytest.approx(by_group.max() - by_group.min())
    assert f"gap by user_group {worst.gap:.3f}" in message and f"'55+' {by_group['55+']:.3f}" in message
    assert result.exposure_gap.gap == pytest.approx(abs(exposure_share - catalog_share))
    assert (
        f"'{named}' gets {exposure_share:.3f} of top-10 exposure vs {catalog_share:.3f} of the catalog"
        in message
    )
    assert f"> {monitoring_settings.exposure_gap_threshold:.3f}" in message


def test_fair_recommendations_pass(world, monitoring_settings: MonitoringSettings) -> None:
    # Every group's relevant items get the same strong lift and no creator is pushed down. The lift is strong
    # (4 sd) because with ~50 users per group a weak model's group means differ by 0.1 NDCG by chance alone.
    recs, relevant = make_recs(world, group_quality=dict.fromkeys(("18-34", "35-54", "55+"), 4.0), seed=2)
    result = evaluate_fairness(
        recs,
        relevant,
        world["user_features"],
        world["item_features"],
        k=10,
        ndcg_gap_threshold=monitoring_settings.ndcg_gap_threshold,
        exposure_gap_threshold=monitoring_settings.exposure_gap_threshold,
        min_group_users=monitoring_settings.min_group_users,
    )
    assert result.passed, result.message()
    assert result.message().startswith("fairness OK")


def test_small_groups_are_reported_but_not_gated(world) -> None:
    recs, relevant = make_recs(world, group_quality={"55+": 0.0})
    result = evaluate_fairness(
        recs, relevant, world["user_features"], world["item_features"], 10, 0.1, 1.0, min_group_users=10_000
    )
    assert all(gap is None for gap in result.ndcg_gaps.values())
    assert result.ndcg_ok and "no two user groups" in result.message()
    assert len(result.quality["user_group"]) == 3  # still in the table


def test_fairness_report_page_and_table(
    world, monitoring_settings: MonitoringSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recs, relevant = make_recs(world, group_quality={"55+": 0.0}, independent_penalty=1.5)
    inter = world["interactions"]
    path = tmp_path / "fairness" / "2026-10-08.html"
    report = run_fairness_report(
        recs,
        relevant,
        world["user_features"],
        world["item_features"],
        monitoring_settings,
        interactions=inter[inter["split"] == "test"],
        html_path=path,
    )
    result = report.result

    # the re-ranking comparison is printed, one line per strength of the sweep
    printed = capsys.readouterr().out
    strengths = sorted({*monitoring_settings.rerank_sweep, monitoring_settings.rerank_strength})
    assert len(re.findall(r"fairness re-ranking strength", printed)) == len(strengths)
    assert [m.strength for m in result.mitigation] == strengths

    page = path.read_text()
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in page
    assert f"{result.exposure_gap.gap:.4f}" in page or f"{result.exposure_gap.gap:.3f}" in page
    assert "FAIL" in page and "<script" not in page
    assert report.evidently_html_path is not None and report.evidently_html_path.exists()

    con = duckdb.connect()
    written = save_fairness_metrics(con, result, pd.Timestamp("2026-10-08").date())
    assert save_fairness_metrics(con, result, pd.Timestamp("2026-10-08").date()) == written
    assert con.execute("select count(*) from monitoring.fairness_metrics").fetchone() == (written,)
    stored = latest_fairness(con)
    assert stored is not None and not stored.passed and stored.message == result.message()
    assert stored.exposure_gap == pytest.approx(result.exposure_gap.gap)
    assert stored.ndcg_gap == pytest.approx(max(g.gap for g in result.ndcg_gaps.values() if g))
    gini_row = con.execute(
        "select value from monitoring.fairness_metrics where metric = 'exposure_gini'"
    ).fetchone()
    assert gini_row is not None and gini_row[0] == pytest.approx(
        exposure_gini(recs, world["item_features"], 10)
    )
    assert mean_ndcg(recs, relevant, 10) == pytest.approx(
        np.mean(list(loop_ndcg(recs, relevant, 10).values()))
    )


def test_gender_and_occupation_are_grouped_by_and_a_null_attribute_is_one_unknown_group(world) -> None:
    # gender follows the age band here (55+ -> 'F'), so the 55+ users' poor lists make a gender gap too;
    # occupation is null for everyone (a dataset without it): one 'unknown' group, no gap to gate on
    recs, relevant = make_recs(world, group_quality={"55+": 0.0})
    users = world["user_features"].assign(
        gender=np.where(world["user_features"]["user_group"] == "55+", "F", "M"), occupation=None
    )
    result = evaluate_fairness(recs, relevant, users, world["item_features"], 10, 0.1, 1.0, min_group_users=1)
    assert set(result.quality) == {"user_group", "region", "gender", "occupation"}
    per_user = pd.Series(loop_ndcg(recs, relevant, 10), name="ndcg").rename_axis("user_id").reset_index()
    by_gender = per_user.merge(users, on="user_id").groupby("gender")["ndcg"].mean()
    gap = result.ndcg_gaps["gender"]
    assert (
        gap is not None and gap.low_group == "F" and gap.gap == pytest.approx(by_gender["M"] - by_gender["F"])
    )
    assert result.quality["occupation"]["group"].tolist() == ["unknown"]
    assert result.ndcg_gaps["occupation"] is None
