"""The same dbt project built on a second, distributed engine: dbt-spark in session mode on Spark's local mode.

The handmade raw tables of conftest.py go to Parquet (as DuckDB's validated raw.* would), `dbt build --target
spark` registers them (the on-run-start hook) and builds every model, data test and unit test there. The split
and point-in-time tests must pass on Spark too, and the marts Spark writes must hold the same rows as the DuckDB
build of the same data. Needs Java 17 (`make java`) and the `spark` extra; the JVM is started by dbt itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from tests.dbt.conftest import (
    BUILD_VARS,
    DBT_EXECUTABLE,
    DBT_PROJECT_DIR,
    BuiltWarehouse,
    create_raw_tables,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The marts compared row for row with the DuckDB build (every column; doubles rounded to 9 places).
COMPARED_MARTS = (
    "split_boundaries",
    "interactions",
    "user_histories",
    "user_features",
    "item_features",
    "training_samples",
    "daily_impressions",
    "daily_item_metrics",
)


def _spark_build(work_dir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Raw tables to Parquet, then `dbt build --target spark` on them; the process and the warehouse folder."""
    seed = work_dir / "seed.duckdb"
    create_raw_tables(seed)
    raw = work_dir / "raw"
    with duckdb.connect(str(seed)) as con:
        for table in ("users", "items", "events"):
            (raw / table).mkdir(parents=True)
            con.execute(f"copy raw.{table} to '{raw / table / 'part-0.parquet'}' (format parquet)")
    warehouse = work_dir / "warehouse"
    env = {
        **os.environ,
        "RECGEN_SPARK_WAREHOUSE": str(warehouse),
        "RECGEN_SPARK_SHUFFLE_PARTITIONS": "1",  # a few rows per table: one task per shuffle
        "DBT_TARGET_PATH": str(work_dir / "target"),
        "DBT_LOG_PATH": str(work_dir / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    env.pop("RECGEN_DBT_TARGET", None)
    build_vars = {**_yaml_vars(BUILD_VARS), "raw_parquet_path": str(raw)}
    args = ["build", "--target", "spark", "--vars", json.dumps(build_vars)]
    proc = subprocess.run(
        [
            str(DBT_EXECUTABLE),
            *args,
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--project-dir",
            str(DBT_PROJECT_DIR),
        ],
        cwd=work_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return proc, warehouse


def _yaml_vars(flow: str) -> dict[str, int]:
    """BUILD_VARS ('{a: 1, b: 2}') as a dict."""
    pairs = (item.split(":") for item in flow.strip("{}").split(","))
    return {key.strip(): int(value) for key, value in pairs}


@pytest.fixture(scope="module")
def spark_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if shutil.which("java") is None:
        pytest.fail("no java on PATH: Spark needs a Java 17 runtime (make java)")
    return _spark_build(tmp_path_factory.mktemp("spark_build"))


def _results(work_dir: Path) -> list[dict]:
    return json.loads((work_dir / "target" / "run_results.json").read_text())["results"]


def test_dbt_build_on_spark_passes_every_model_and_test(spark_build) -> None:
    proc, warehouse = spark_build
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    statuses = Counter(
        (result["unique_id"].split(".")[0], result["status"]) for result in _results(warehouse.parent)
    )
    # as on DuckDB (tests/dbt/test_dbt_project.py): 17 models, every data and unit test passing; the one
    # operation is the on-run-start hook that registered the raw Parquet tables
    assert statuses[("model", "success")] == 17 and statuses[("operation", "success")] == 1
    assert statuses[("test", "pass")] > 100 and statuses[("unit_test", "pass")] >= 5
    assert set(statuses) == {
        ("model", "success"),
        ("operation", "success"),
        ("test", "pass"),
        ("unit_test", "pass"),
    }


@pytest.mark.parametrize(
    "test_name",
    ["within_split_window", "assert_split_windows_are_contiguous", "no_future_features"],
)
def test_split_and_point_in_time_tests_pass_on_spark(spark_build, test_name: str) -> None:
    _, warehouse = spark_build
    ran = [r for r in _results(warehouse.parent) if r["unique_id"].startswith(f"test.recgen.{test_name}")]
    assert ran, f"no {test_name} test ran on Spark"
    assert {r["status"] for r in ran} == {"pass"}


def _spark_mart(warehouse: Path, mart: str) -> str:
    """A DuckDB relation over the Parquet files Spark wrote for marts.<mart> (day partitions as a column)."""
    folder = warehouse / "marts.db" / mart
    assert folder.is_dir(), f"Spark wrote no {folder}"
    return f"read_parquet('{folder}/**/*.parquet', hive_partitioning = true)"


def _rounded(con: duckdb.DuckDBPyConnection, relation: str, columns: list[tuple[str, str]]) -> str:
    """select of ``columns`` from relation, doubles rounded to 9 places and every column cast to its type."""
    parts = [
        f"round(cast({name} as double), 9) as {name}"
        if kind == "DOUBLE"
        else f"cast({name} as {kind}) as {name}"
        for name, kind in columns
    ]
    return f"select {', '.join(parts)} from {relation}"


@pytest.mark.parametrize("mart", COMPARED_MARTS)
def test_spark_marts_equal_the_duckdb_marts(spark_build, built_warehouse: BuiltWarehouse, mart: str) -> None:
    proc, warehouse = spark_build
    assert proc.returncode == 0
    with duckdb.connect(str(built_warehouse.database), read_only=True) as con:
        columns = con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'marts' and table_name = ? order by ordinal_position",
            [mart],
        ).fetchall()
        duck = _rounded(con, f"marts.{mart}", columns)
        spark = _rounded(con, _spark_mart(warehouse, mart), columns)
        n_rows = con.execute(f"select count(*) from marts.{mart}").fetchone()[0]
        only_duckdb = con.execute(f"select * from ({duck} except all {spark})").fetchall()
        only_spark = con.execute(f"select * from ({spark} except all {duck})").fetchall()
    assert n_rows > 0
    assert only_duckdb == [] and only_spark == [], (only_duckdb[:5], only_spark[:5])
