"""The evaluation protocol and the train-and-evaluate functions the assets call, on the tiny synthetic marts."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from models import evaluation as training
from models.recdata import RecData, write_frame
from tests.models.conftest import TinyStack, tiny_settings


@pytest.fixture(scope="module")
def test_result(tiny_stack: TinyStack) -> training.EvaluationResult:
    return training.run_evaluation(
        tiny_stack.settings, tiny_stack.data, tiny_stack.encoder, tiny_stack.ranker, 1.0
    )


@pytest.fixture(scope="module")
def protocol_result(tiny_stack: TinyStack) -> training.EvaluationResult:
    # two seeds: the session's models serve seed 42, seed 43 trains its own two-tower and ranker
    return training.evaluate_all(
        tiny_stack.settings, tiny_stack.data, tiny_stack.encoder, tiny_stack.ranker, seeds=(42, 43)
    )


def test_protocol_table_has_every_model_with_spread_and_seconds(
    protocol_result: training.EvaluationResult,
) -> None:
    table = protocol_result.table
    assert list(table.columns) == training.TABLE_COLUMNS
    assert table["model"].tolist() == list(training.MODEL_NAMES)
    assert (table["n_seeds"] == 2).all()
    ranking = table[["ndcg@10", "recall@20", "mrr@10", "hit@10", "coverage"]].to_numpy()
    assert ((ranking >= 0) & (ranking <= 1)).all()
    assert table["auc"].notna().all()  # every model scores the test impressions through score()
    assert (table["fit_seconds"] > 0).all() and (table["eval_seconds"] > 0).all()
    rows = table.set_index("model")
    # deterministic models give the same figures for every seed; the trained ones are seeded
    for name in ("popularity", "recency_popularity", "itemknn", "ease"):
        assert rows.loc[name, "ndcg@10_std"] == 0.0 and rows.loc[name, "recall@20_std"] == 0.0
    assert rows.loc["bpr", "ndcg@10_std"] > 0.0
    # hyperparameters chosen on valid are recorded: EASE's lambda from the grid, BPR's early-stopped epoch
    assert json.loads(rows.loc["ease", "params"])["l2"] in tiny_stack_grid("ease_l2_grid")
    assert 1 <= json.loads(rows.loc["bpr", "params"])["epochs"] <= 10
    # the mean over seeds of the per-user figures is the table's figure
    per_user = protocol_result.per_user
    bpr = per_user[per_user["model"] == "bpr"].groupby("seed")["ndcg@10"].mean().mean()
    assert bpr == pytest.approx(rows.loc["bpr", "ndcg@10"])


def tiny_stack_grid(name: str) -> tuple[float, ...]:
    return getattr(tiny_settings().evaluation, name)


def test_bootstrap_compares_full_stack_with_the_best_baseline(
    protocol_result: training.EvaluationResult,
) -> None:
    table = protocol_result.table.set_index("model")
    comparison = protocol_result.comparison
    baselines = table.loc[list(training.BASELINE_NAMES), "ndcg@10"]
    assert comparison["best_baseline"] == baselines.idxmax()
    full = table.loc["full_stack"]
    assert full["delta_ci_low"] <= full["delta_ndcg@10"] <= full["delta_ci_high"]
    assert full["delta_ndcg@10"] == pytest.approx(full["ndcg@10"] - baselines.max())
    assert table.drop(index="full_stack")["delta_ci_low"].isna().all()
    ok, message = training.full_stack_wins(protocol_result.table)
    assert ok == (full["delta_ci_low"] > 0)
    assert f"{full['delta_ci_low']:+.4f}" in message


def test_paired_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(400)
    # a constant improvement: the interval is that constant
    delta, low, high = training.paired_bootstrap(b + 0.1, b, samples=500)
    assert delta == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    # noise around +0.05 with sd 0.2 over 400 users: the interval is about +/- 1.96 * 0.2 / 20 = 0.02 wide
    a = b + 0.05 + rng.normal(0, 0.2, 400)
    delta, low, high = training.paired_bootstrap(a, b, samples=2000, seed=1)
    assert low < delta < high
    assert 0.015 < (high - low) / 2 < 0.03
    # pure noise: the interval covers 0
    _, low, high = training.paired_bootstrap(b + rng.normal(0, 0.2, 400), b, samples=2000)
    assert low < 0 < high or abs(low) < 0.03


def test_evaluation_plot_is_a_png(protocol_result: training.EvaluationResult, tmp_path: Path) -> None:
    path = training.plot_evaluation(protocol_result.table, tmp_path / "reports" / "evaluation.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_full_stack_beats_popularity_on_the_synthetic_world(test_result: training.EvaluationResult) -> None:
    # popularity ignores taste; in this world clicks follow one topic per user, which history and text reveal
    table = test_result.table.set_index("model")
    assert table.loc["full_stack", "ndcg@10"] > table.loc["popularity", "ndcg@10"]
    assert table.loc["full_stack", "recall@20"] > table.loc["popularity", "recall@20"]


def test_metrics_agree_with_the_recommendations_table(
    test_result: training.EvaluationResult, tiny_stack: TinyStack
) -> None:
    # hit@10 recomputed from ml.eval_recommendations rows must equal the table's figure
    recs = test_result.recommendations
    top = recs[recs["rank"] <= 10]
    hits = top.groupby(["model", "user_id"])["relevant"].any().groupby("model").mean()
    table = test_result.table.set_index("model")
    for model in table.index:
        assert hits[model] == pytest.approx(table.loc[model, "hit@10"])
    assert set(recs["user_id"]) == set(tiny_stack.data.relevant("test"))


def test_group_table_covers_user_and_creator_groups(
    test_result: training.EvaluationResult, rec_data: RecData
) -> None:
    groups = test_result.groups
    assert set(groups["dimension"]) == {"user_group", "region", "creator_group"}
    full = groups[(groups["model"] == "full_stack") & (groups["dimension"] == "creator_group")]
    assert full["exposure_share"].sum() == pytest.approx(1.0)
    users = groups[(groups["model"] == "full_stack") & (groups["dimension"] == "user_group")]
    assert users["n_users"].sum() == len(rec_data.relevant("test"))


def test_full_stack_wins_needs_the_interval_above_zero() -> None:
    table = pd.DataFrame(
        {
            "model": ["popularity", "itemknn", "bpr", "full_stack"],
            "ndcg@10": [0.1, 0.2, 0.15, 0.25],
            "recall@20": [0.3, 0.35, 0.2, 0.3],
            "delta_ndcg@10": [np.nan, np.nan, np.nan, 0.05],
            "delta_ci_low": [np.nan, np.nan, np.nan, -0.01],
            "delta_ci_high": [np.nan, np.nan, np.nan, 0.11],
        }
    )
    ok, message = training.full_stack_wins(table)
    # a higher mean whose interval reaches below 0 is not a win
    assert not ok
    assert "full_stack 0.2500 vs best baseline itemknn 0.2000, difference +0.0500" in message
    assert "interval -0.0100 .. +0.1100: TIE" in message
    assert "recall@20: full_stack 0.3000 vs best baseline itemknn 0.3500 (behind)" in message
    assert training.full_stack_verdict(table)[0] == "tie"
    table.loc[3, "delta_ci_low"] = 0.01
    assert training.full_stack_wins(table)[0] and training.full_stack_verdict(table)[0] == "win"
    table.loc[3, ["delta_ci_low", "delta_ci_high"]] = [-0.08, -0.01]
    assert training.full_stack_verdict(table)[0] == "loss"


def test_champion_policy_a_tie_only_makes_a_first_champion() -> None:
    assert training.may_promote("win", has_champion=True) and training.may_promote("win", has_champion=False)
    assert training.may_promote("tie", has_champion=False)
    assert not training.may_promote("tie", has_champion=True)
    assert not training.may_promote("loss", has_champion=False) and not training.may_promote("loss", True)


def test_write_report_and_frames(tmp_path: Path) -> None:
    table = pd.DataFrame({"model": ["a"], "ndcg@10": [0.5]})
    path = training.write_report(table, tmp_path / "reports")
    assert pd.read_csv(path).equals(table)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    frame = pd.DataFrame({"item_id": ["x", "y"], "embedding": [np.array([1.0, 2.0]), np.array([3.0, 4.0])]})
    write_frame(con, "ml.vectors", frame, list_columns=("embedding",))
    back = con.execute("select item_id, embedding from ml.vectors order by item_id").df()
    assert [list(v) for v in back["embedding"]] == [[1.0, 2.0], [3.0, 4.0]]
    assert (
        con.execute(
            "select data_type from information_schema.columns where column_name = 'embedding'"
        ).fetchone()[0]
        == "FLOAT[]"
    )


def test_tuning_picks_a_weight_from_the_grid(tiny_stack: TinyStack) -> None:
    settings = tiny_settings(ranker={"epochs": 1, "retrieval_weight_grid": (0.0, 1.0, 3.0)})
    weight, grid = training.tune_retrieval_weight(
        settings, tiny_stack.data, tiny_stack.encoder, tiny_stack.ranker
    )
    assert weight in (0.0, 1.0, 3.0)
    assert grid.loc[grid["retrieval_weight"] == weight, "valid_ndcg@10"].iloc[0] == pytest.approx(
        grid["valid_ndcg@10"].max()
    )


def test_relevant_items_follow_the_protocol(rec_data: RecData) -> None:
    # recomputed with plain pandas: test-window engagements, minus items engaged with before the window and
    # items published during it
    start = rec_data.split_start("test")
    hist = rec_data.histories
    before = set(
        zip(
            hist.loc[hist["event_ts"] < start, "user_id"],
            hist.loc[hist["event_ts"] < start, "item_id"],
            strict=True,
        )
    )
    published = rec_data.items.set_index("item_id")["published_at"]
    expected: dict[str, set[str]] = {}
    for user, item in zip(
        hist.loc[hist["split"] == "test", "user_id"],
        hist.loc[hist["split"] == "test", "item_id"],
        strict=True,
    ):
        if (user, item) not in before and published[item] < start:
            expected.setdefault(user, set()).add(item)
    ids = rec_data.items["item_id"].to_numpy()
    got = {u: set(ids[list(v)]) for u, v in rec_data.relevant("test").items()}
    assert got == expected
    assert sum(len(v) for v in got.values()) < (hist["split"] == "test").sum()  # something was left out


def test_marts_without_gender_or_occupation_still_load_and_with_them_carry_them(
    synthetic_marts: tuple[dict[str, pd.DataFrame], pd.DataFrame], tmp_path: Path
) -> None:
    # a warehouse built before the two attributes existed (the synthetic marts lack them) reads as nulls;
    # one whose user_features has them reads their values
    frames, embeddings = synthetic_marts
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    for name, frame in frames.items():
        write_frame(con, f"marts.{name}", frame)
    old = training.build_data(training.read_marts(con), embeddings)
    assert old.users["gender"].isna().all() and old.users["occupation"].isna().all()
    users = frames["user_features"]
    genders = np.where(np.arange(len(users)) % 2 == 0, "F", "M")
    write_frame(con, "marts.user_features", users.assign(gender=genders, occupation="writer"))
    new = training.build_data(training.read_marts(con), embeddings)
    assert sorted(new.users["gender"].unique()) == ["F", "M"] and set(new.users["occupation"]) == {"writer"}
    assert new.users["user_id"].tolist() == old.users["user_id"].tolist()
