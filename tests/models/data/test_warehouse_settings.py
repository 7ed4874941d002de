"""DuckDB memory settings: applied to the pipeline's connections and to dbt's; unset or empty keeps the defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from models.data import warehouse
from models.settings import get_settings

ROOT = Path(__file__).resolve().parents[3]
DBT_DIR = ROOT / "dbt_project"
SHOW = "select current_setting('memory_limit') as m, current_setting('temp_directory') as t"


def _defaults(database: Path) -> tuple[str, str]:
    """memory_limit and temp_directory of a plain duckdb.connect of ``database`` (DuckDB's own defaults)."""
    con = duckdb.connect(str(database))
    try:
        return con.execute(SHOW).fetchone()
    finally:
        con.close()


def _connected(database: Path, settings_kwargs: dict) -> tuple[str, str]:
    settings = get_settings(duckdb_path=database, **settings_kwargs)
    with warehouse.connect(database, config=warehouse.duckdb_config(settings)) as con:
        return con.execute(SHOW).fetchone()


def test_connect_applies_the_memory_limit_and_temp_directory(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    limit, temp = _connected(
        tmp_path / "w.duckdb", {"duckdb_memory_limit": "1GB", "duckdb_temp_directory": str(spill)}
    )
    assert limit == "953.6 MiB"  # DuckDB reports 1GB (10^9 bytes) in GiB units
    assert temp == str(spill)


@pytest.mark.parametrize("value", [None, ""])
def test_unset_or_empty_keeps_duckdb_defaults(tmp_path: Path, value: str | None) -> None:
    database = tmp_path / "w.duckdb"
    default_limit, default_temp = _defaults(tmp_path / "plain.duckdb")
    settings = get_settings(duckdb_path=database, duckdb_memory_limit=value, duckdb_temp_directory=value)
    assert warehouse.duckdb_config(settings) == {}
    limit, temp = _connected(database, {"duckdb_memory_limit": value, "duckdb_temp_directory": value})
    assert limit == default_limit
    assert temp == str(database) + ".tmp" and default_temp == str(tmp_path / "plain.duckdb") + ".tmp"


def _dbt_show(env_update: dict[str, str], work: Path) -> str:
    """``dbt show`` of the DuckDB settings through the project's real profile."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RECGEN_DUCKDB_")},
        **env_update,
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    env.pop("RECGEN_DBT_TARGET", None)
    dbt = Path(sys.prefix) / "bin" / "dbt"
    proc = subprocess.run(
        [str(dbt), "show", "--inline", SHOW, "--output", "json", "--profiles-dir", ".", "--project-dir", "."],
        cwd=DBT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_dbt_profile_reads_the_settings_from_dbt_env(tmp_path: Path) -> None:
    database = tmp_path / "w.duckdb"
    spill = tmp_path / "spill"
    settings = get_settings(duckdb_path=database, duckdb_memory_limit="1GB", duckdb_temp_directory=str(spill))
    out = _dbt_show(warehouse.dbt_env(settings), tmp_path)
    assert '"m": "953.6 MiB"' in out and f'"t": "{spill}"' in out

    # unset: DuckDB's defaults, as before the settings existed
    default_limit, _ = _defaults(tmp_path / "plain.duckdb")
    out = _dbt_show(warehouse.dbt_env(get_settings(duckdb_path=database)), tmp_path)
    assert f'"m": "{default_limit}"' in out and f'"t": "{database}.tmp"' in out
