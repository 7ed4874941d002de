"""Dagster resources: the settings, the DuckDB warehouse and the dbt CLI."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource, DbtProject
from dagster_dbt.dbt_project import DagsterDbtProjectPreparer

from models.data import warehouse
from models.settings import Settings, get_settings

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"


class RecgenResource(dg.ConfigurableResource):
    """Gives assets the typed settings and lock-guarded DuckDB connections.

    ``env_overrides`` exists for tests and one-off runs; deployments set ``RECGEN_*`` environment variables.
    """

    home: str | None = None
    duckdb_path: str | None = None

    def settings(self) -> Settings:
        overrides: dict[str, object] = {}
        if self.home:
            overrides["home"] = Path(self.home)
        if self.duckdb_path:
            overrides["duckdb_path"] = Path(self.duckdb_path)
        settings = get_settings(**overrides)
        settings.ensure_dirs()
        return settings

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        settings = self.settings()
        with warehouse.connect(settings.database, config=warehouse.duckdb_config(settings)) as con:
            yield con

    def dbt_env(self) -> dict[str, str]:
        """Environment for the dbt CLI: the DuckDB file and its memory settings (``dbt_project/profiles.yml``)."""
        return warehouse.dbt_env(self.settings())

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the warehouse lock while another process (dbt) writes the file."""
        with warehouse.exclusive_lock(self.settings().database):
            yield


def dbt_executable() -> str:
    """The dbt CLI beside this interpreter (the venv's ``bin/``), so the venv need not be on PATH."""
    exe = Path(sys.prefix) / "bin" / "dbt"
    return str(exe) if exe.exists() else "dbt"


def dbt_resource() -> DbtCliResource:
    """The dbt CLI resource the dbt assets run with: absolute project, profiles and executable paths."""
    return DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )


class RecgenDbtPreparer(DagsterDbtProjectPreparer):
    """dagster-dbt's preparer (``dbt parse`` under ``dagster dev``) with the venv's dbt, not the one on PATH.

    dagster-dbt's own preparer builds ``DbtCliResource(project_dir=...)``, whose executable is the bare name
    ``dbt``: under ``dagster dev`` started from ``.venv/bin`` without an activated venv that is not on PATH,
    and the code location failed to load.
    """

    def prepare(self, project: DbtProject) -> None:
        dbt_resource().cli(["parse", "--quiet"], target_path=project.target_path).wait()


def prepare_dbt_project_if_dev(project: DbtProject) -> None:
    """Re-parse the dbt project when running under ``dagster dev`` (a no-op elsewhere)."""
    RecgenDbtPreparer().prepare_if_dev(project)
