"""The project's custom generic tests fail on the tables they guard against, in a throwaway dbt project."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.dbt.conftest import DBT_PROJECT_DIR, run_dbt

pytestmark = pytest.mark.integration

PROJECT_YML = """
name: generic_checks
version: "1.0.0"
config-version: 2
profile: generic_checks
model-paths: ["models"]
test-paths: ["tests"]
models:
  generic_checks:
    +materialized: table
"""

PROFILES_YML = """
generic_checks:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('RECGEN_DUCKDB_PATH') }}"
      threads: 1
"""

# A point-in-time table done right: features_as_of strictly before event_ts on every row.
SAFE_SAMPLES = """
select * from (values
    ('r1', 'i1', timestamp '2026-10-01 09:00:00', timestamp '1970-01-01 00:00:00', 'train'),
    ('r2', 'i1', timestamp '2026-10-02 09:00:00', timestamp '2026-10-01 09:00:00', 'train'),
    ('r3', 'i2', timestamp '2026-10-03 09:00:00', timestamp '2026-10-03 08:59:59', 'test')
) as t(request_id, item_id, event_ts, features_as_of, split)
"""

# The same table with leaks: r2 read its own instant (as_of = event_ts), r3 read a later event.
# r2 is also duplicated (grain broken) and r3 is labeled train although it falls in test.
LEAKY_SAMPLES = """
select * from (values
    ('r1', 'i1', timestamp '2026-10-01 09:00:00', timestamp '1970-01-01 00:00:00', 'train'),
    ('r2', 'i1', timestamp '2026-10-02 09:00:00', timestamp '2026-10-02 09:00:00', 'train'),
    ('r2', 'i1', timestamp '2026-10-02 09:00:00', timestamp '2026-10-01 09:00:00', 'train'),
    ('r3', 'i2', timestamp '2026-10-03 09:00:00', timestamp '2026-10-03 10:00:00', 'train')
) as t(request_id, item_id, event_ts, features_as_of, split)
"""

BOUNDARIES = """
select * from (values
    ('train', timestamp '2026-10-01 00:00:00', timestamp '2026-10-03 00:00:00'),
    ('test', timestamp '2026-10-03 00:00:00', timestamp '2026-10-04 00:00:00')
) as t(split, starts_at, ends_at)
"""

SCHEMA_YML = """
version: 2
models:
  - name: {name}
    data_tests:
      - no_future_features:
          arguments:
            as_of_column: features_as_of
            event_ts_column: event_ts
      - unique_combination_of_columns:
          arguments:
            combination_of_columns: [request_id, item_id]
      - within_split_window:
          arguments:
            boundaries: ref('boundaries')
"""


def _write_project(root: Path) -> None:
    """A tiny dbt project reusing recgen's tests/generic (copied) on a safe and a leaky table."""
    (root / "models").mkdir(parents=True)
    shutil.copytree(DBT_PROJECT_DIR / "tests" / "generic", root / "tests" / "generic")
    (root / "dbt_project.yml").write_text(PROJECT_YML)
    (root / "profiles.yml").write_text(PROFILES_YML)
    (root / "models" / "boundaries.sql").write_text(BOUNDARIES)
    for name, sql in (("safe_samples", SAFE_SAMPLES), ("leaky_samples", LEAKY_SAMPLES)):
        (root / "models" / f"{name}.sql").write_text(sql)
        (root / "models" / f"{name}.yml").write_text(SCHEMA_YML.format(name=name))


def test_generic_tests_fail_on_a_leaky_table_and_pass_on_a_safe_one(tmp_path: Path) -> None:
    project = tmp_path / "generic_checks"
    _write_project(project)
    run = run_dbt(["build"], project, tmp_path / "checks.duckdb", tmp_path)

    assert run.returncode != 0
    assert "Failure in test no_future_features_leaky_samples" in run.output, run.output[-3000:]
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    outcome = {
        r["unique_id"].split(".")[2]: (r["status"], r["failures"])
        for r in results
        if r["unique_id"].startswith("test.")
    }
    # Failure counts are the rows built to break each rule: 2 leaks (r2 at its own instant, r3 after it),
    # 1 duplicated key (r2, i1), 1 row outside its split window (r3 on Oct 3 labeled train).
    assert outcome == {
        "no_future_features_leaky_samples_features_as_of__event_ts": ("fail", 2),
        "unique_combination_of_columns_leaky_samples_request_id__item_id": ("fail", 1),
        "within_split_window_leaky_samples_ref_boundaries_": ("fail", 1),
        "no_future_features_safe_samples_features_as_of__event_ts": ("pass", 0),
        "unique_combination_of_columns_safe_samples_request_id__item_id": ("pass", 0),
        "within_split_window_safe_samples_ref_boundaries_": ("pass", 0),
    }
