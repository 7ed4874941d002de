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
SHOW = (
    "select current_setting('memory_limit') as m, current_setting('temp_directory') as t, "
    "current_setting('max_temp_directory_size') as x"
)
# DuckDB's max_temp_directory_size before anything spilled (it then reads as a size: 90% of the free disk)
DEFAULT_TEMP_CAP = "90% of available disk space"
# 2M distinct strings counted in 50 MB of memory: the aggregate spills tens of MB (about 1 s on one core)
SPILLING = "select count(*) as n from (select distinct md5(i::varchar) from range(2000000) r(i))"


def _defaults(database: Path) -> tuple[str, str, str]:
    """memory_limit, temp_directory and max_temp_directory_size of a plain duckdb.connect (DuckDB's defaults)."""
    con = duckdb.connect(str(database))
    try:
        return con.execute(SHOW).fetchone()
    finally:
        con.close()


def _connected(database: Path, settings_kwargs: dict) -> tuple[str, str, str]:
    settings = get_settings(duckdb_path=database, **settings_kwargs)
    with warehouse.connect(database, config=warehouse.duckdb_config(settings)) as con:
        return con.execute(SHOW).fetchone()


def test_connect_applies_the_memory_limit_and_temp_directory(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    limit, temp, cap = _connected(
        tmp_path / "w.duckdb",
        {
            "duckdb_memory_limit": "1GB",
            "duckdb_temp_directory": str(spill),
            "duckdb_max_temp_directory_size": "2GB",
        },
    )
    assert limit == "953.6 MiB"  # DuckDB reports 1GB (10^9 bytes) in GiB units
    assert temp == str(spill)
    assert cap == "1.8 GiB"


def test_max_temp_directory_size_stops_a_query_that_spills_more(tmp_path: Path) -> None:
    """A query that must spill past the cap fails (DuckDB names the setting); without the cap it passes."""
    small = {"duckdb_memory_limit": "50MB", "duckdb_temp_directory": str(tmp_path / "spill")}
    capped = get_settings(
        duckdb_path=tmp_path / "capped.duckdb", duckdb_max_temp_directory_size="1MB", **small
    )
    with warehouse.connect(capped.database, config=warehouse.duckdb_config(capped)) as con:
        con.execute("SET threads = 1")
        with pytest.raises(duckdb.OutOfMemoryException, match="max_temp_directory_size"):
            con.execute(SPILLING)
    free = get_settings(duckdb_path=tmp_path / "free.duckdb", **small)
    with warehouse.connect(free.database, config=warehouse.duckdb_config(free)) as con:
        con.execute("SET threads = 1")
        assert con.execute(SPILLING).fetchone()[0] == 2_000_000


@pytest.mark.parametrize("value", [None, ""])
def test_unset_or_empty_keeps_duckdb_defaults(tmp_path: Path, value: str | None) -> None:
    database = tmp_path / "w.duckdb"
    default_limit, default_temp, default_cap = _defaults(tmp_path / "plain.duckdb")
    unset = {
        "duckdb_memory_limit": value,
        "duckdb_temp_directory": value,
        "duckdb_max_temp_directory_size": value,
    }
    settings = get_settings(duckdb_path=database, **unset)
    assert warehouse.duckdb_config(settings) == {}
    limit, temp, cap = _connected(database, unset)
    assert limit == default_limit
    assert temp == str(database) + ".tmp" and default_temp == str(tmp_path / "plain.duckdb") + ".tmp"
    assert cap == default_cap == DEFAULT_TEMP_CAP


def _dbt_show(env_update: dict[str, str], work: Path, query: str = SHOW, ok: bool = True) -> str:
    """``dbt show`` of ``query`` (the DuckDB settings) through the project's real profile; its output."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RECGEN_DUCKDB_")},
        **env_update,
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    env.pop("RECGEN_DBT_TARGET", None)
    dbt = Path(sys.prefix) / "bin" / "dbt"
    project = ["--profiles-dir", ".", "--project-dir", "."]
    proc = subprocess.run(
        [str(dbt), "show", "--inline", query, "--output", "json", *project],
        cwd=DBT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_dbt_profile_reads_the_settings_from_dbt_env(tmp_path: Path) -> None:
    database = tmp_path / "w.duckdb"
    spill = tmp_path / "spill"
    settings = get_settings(
        duckdb_path=database,
        duckdb_memory_limit="1GB",
        duckdb_temp_directory=str(spill),
        duckdb_max_temp_directory_size="2GB",
    )
    out = _dbt_show(warehouse.dbt_env(settings), tmp_path)
    assert '"m": "953.6 MiB"' in out and f'"t": "{spill}"' in out and '"x": "1.8 GiB"' in out

    # unset: DuckDB's defaults, as before the settings existed
    default_limit, _, _ = _defaults(tmp_path / "plain.duckdb")
    out = _dbt_show(warehouse.dbt_env(get_settings(duckdb_path=database)), tmp_path)
    assert f'"m": "{default_limit}"' in out and f'"t": "{database}.tmp"' in out
    assert f'"x": "{DEFAULT_TEMP_CAP}"' in out


def test_dbt_stops_a_query_that_spills_past_max_temp_directory_size(tmp_path: Path) -> None:
    """dbt's connection enforces the cap, not only shows it (given at connect, DuckDB 2.0 spilled past it)."""
    small = {"duckdb_memory_limit": "50MB", "duckdb_temp_directory": str(tmp_path / "spill")}
    capped = get_settings(duckdb_path=tmp_path / "w.duckdb", duckdb_max_temp_directory_size="1MB", **small)
    out = _dbt_show(warehouse.dbt_env(capped), tmp_path, SPILLING, ok=False)
    assert "max_temp_directory_size" in out
    free = get_settings(duckdb_path=tmp_path / "w.duckdb", **small)
    assert '"n": 2000000' in _dbt_show(warehouse.dbt_env(free), tmp_path, SPILLING)
