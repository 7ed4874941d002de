"""The whole pipeline, ingest -> dbt -> GX checks -> models -> evaluation, on a MovieLens-100k-layout folder.

The dataset is chosen the way a user chooses it, through the environment (RECGEN_DATASET,
RECGEN_DATASET_PATH, RECGEN_PARTITIONS_START_DATE); the real Dagster assets run against a fresh DuckDB file,
and the table `make run` prints comes from `python -m orchestration.summary` in a child process.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import torch

from models.settings import get_settings
from orchestration.summary import evaluation_table
from tests.fixtures.movielens import MovieLensFixture, write_movielens_fixture
from tests.orchestration.test_ml_assets import TINY_MODELS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVALUATION_COLUMNS = [
    "model", "ndcg@10", "ndcg@10_std", "recall@20", "recall@20_std", "mrr@10", "hit@10", "coverage", "novelty",
    "diversity",
]  # fmt: skip
BASELINES = ["popularity", "recency_popularity", "itemknn", "ease", "bpr"]
# Small models and few epochs: the test checks that the pipeline runs on MovieLens data, not model quality.
SMALL_MODELS = {
    **TINY_MODELS,
    "RECGEN_QUALITY__MIN_USERS": "10",
    "RECGEN_QUALITY__MIN_ITEMS": "10",
    "RECGEN_QUALITY__MIN_EVENTS": "100",
}


@pytest.fixture
def movielens_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> tuple[Path, MovieLensFixture]:
    """A fresh RECGEN_HOME configured, through the environment, to read a MovieLens-100k folder."""
    fixture = write_movielens_fixture(tmp_path / "ml-100k")
    home = tmp_path / "home"
    env = {
        "RECGEN_DATASET": "movielens",
        "RECGEN_DATASET_PATH": str(fixture.path),
        "RECGEN_PARTITIONS_START_DATE": fixture.start_date,
        "RECGEN_HOME": str(home),
        "RECGEN_REPORTS_DIR": str(tmp_path / "reports"),
        "RECGEN_DUCKDB_PATH": str(home / "recgen.duckdb"),
        **SMALL_MODELS,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # the ML assets apply RECGEN_TORCH_THREADS to the whole process: give later tests their thread count back
    threads = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    return home, fixture


def _materialize_through_evaluation() -> dg.ExecuteInProcessResult:
    from orchestration.assets.dbt import recgen_dbt_models
    from orchestration.assets.ingest import raw_tables
    from orchestration.assets.ml import ml_assets
    from orchestration.checks.ml import ml_checks
    from orchestration.checks.quality import gx_checks
    from orchestration.resources import RecgenResource, dbt_resource

    return dg.materialize(
        [raw_tables, recgen_dbt_models, *ml_assets, *gx_checks, *ml_checks],
        resources={"recgen": RecgenResource(), "dbt": dbt_resource()},
        raise_on_error=False,
    )


def test_movielens_folder_runs_the_pipeline_and_prints_the_evaluation_table(
    movielens_home: tuple[Path, MovieLensFixture], tmp_path: Path
) -> None:
    home, fixture = movielens_home
    settings = get_settings()
    assert (settings.dataset, settings.first_partition_day) == ("movielens", "1997-09-20")
    result = _materialize_through_evaluation()

    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
    # the full stack need not beat the baselines on a fixture this small: that blocking check may fail alone
    assert failed_steps <= {"evaluation_full_stack_beats_baselines"}, failed_steps
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {
        "raw/events",
        "training_samples",
        "item_embeddings",
        "ranker",
        "baselines",
        "evaluation",
    } <= materialized
    failed_checks = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    assert set(failed_checks) <= {"full_stack_beats_baselines"}, failed_checks

    con = duckdb.connect(str(home / "recgen.duckdb"), read_only=True)
    try:
        sources = {r[0] for r in con.execute("select distinct source from raw.ingest_batches").fetchall()}
        ratings = con.execute("select count(*) from raw.events where event_type = 'rating'").fetchone()[0]
        splits = dict(con.execute("select split, count(*) from marts.training_samples group by 1").fetchall())
        n_items = con.execute("select count(*) from ml.item_embeddings").fetchone()[0]
        recs = con.execute("select * from ml.eval_recommendations").df()
        train = con.execute(
            "select distinct user_id, item_id from marts.interactions i join marts.split_boundaries b "
            "on i.event_ts < b.starts_at where b.split = 'test'"
        ).df()
    finally:
        con.close()
    assert sources == {"movielens"}
    assert ratings == fixture.n_ratings  # every rating of the fixture is clean and ingested
    assert set(splits) == {"train", "valid", "test"} and min(splits.values()) > 0
    assert n_items == fixture.n_items

    # reports/evaluation.csv: the columns of the issue and a row per baseline and for the full stack
    reports = Path(os.environ["RECGEN_REPORTS_DIR"])
    table = pd.read_csv(reports / "evaluation.csv")
    assert list(table.columns[: len(EVALUATION_COLUMNS)]) == EVALUATION_COLUMNS
    assert {*BASELINES, "full_stack"} <= set(table["model"])
    for column in EVALUATION_COLUMNS[1:]:
        assert table[column].map(math.isfinite).all(), column
    for column in ["ndcg@10", "recall@20", "mrr@10", "hit@10", "coverage", "diversity"]:
        assert table[column].between(0, 1).all(), table[["model", column]]
    assert (table["novelty"] >= 0).all()
    # every model found some of the test positives on a dataset with this much structure
    assert (table.set_index("model").loc[[*BASELINES, "full_stack"], "hit@10"] > 0).all()

    # no model recommends an item the user interacted with before the test window
    assert {*BASELINES, "full_stack"} <= set(recs["model"])
    seen = recs.merge(train, on=["user_id", "item_id"])
    assert seen.empty, seen.head()

    # the same table `make run` prints
    run = subprocess.run(
        [sys.executable, "-m", "orchestration.summary"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"evaluation {(reports / 'evaluation.csv').resolve()}" in run.stdout
    # the table printed is the CSV's (every model with its NDCG@10, as orchestration.summary formats it)
    assert evaluation_table(table) in run.stdout
    print(run.stdout)
