"""dbt: every model of dbt_project/ is its own asset and every dbt test an asset check."""

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from orchestration.partitions import daily_partitions
from orchestration.resources import DBT_PROJECT_DIR, RecgenResource, prepare_dbt_project_if_dev

# Models tagged `daily` are built one day partition at a time (dbt_project/models/marts/daily/).
DAILY_SELECTOR = "tag:daily"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under `dagster dev` this runs `dbt parse` (with the venv's dbt); elsewhere `make` has produced the manifest.
prepare_dbt_project_if_dev(dbt_project)


class RecgenDbtTranslator(DagsterDbtTranslator):
    """Groups dbt models by their folder (staging, intermediate, marts), mirroring the pipeline's stages."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "model":
            fqn = dbt_resource_props.get("fqn", [])
            return fqn[1] if len(fqn) > 2 else "marts"
        return super().get_group_name(dbt_resource_props)


def dbt_vars(recgen: RecgenResource) -> dict[str, Any]:
    """dbt vars that come from the one settings object (both shares set: the share split, else days)."""
    return recgen.settings().split.dbt_vars()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    dagster_dbt_translator=RecgenDbtTranslator(
        settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
    ),
    exclude=DAILY_SELECTOR,
    pool="duckdb",
)
def recgen_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, recgen: RecgenResource
) -> Iterator[Any]:
    """`dbt build` (models + tests) against the DuckDB file from settings, under the warehouse lock."""
    yield from _build(context, dbt, recgen, dbt_vars(recgen))


@dbt_assets(
    manifest=dbt_project.manifest_path,
    dagster_dbt_translator=RecgenDbtTranslator(
        settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
    ),
    select=DAILY_SELECTOR,
    partitions_def=daily_partitions,
    # one day per run, like the other daily assets (dagster-dbt's default for time partitions is one run
    # over the whole range, which the scores, drift and copy assets do not support)
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    name="recgen_daily_dbt_models",
    pool="duckdb",
)
def recgen_daily_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, recgen: RecgenResource
) -> Iterator[Any]:
    """The `daily` incremental models for the partition's day: dbt gets its [min_date, max_date) window."""
    window = context.partition_time_window
    day_vars = {"min_date": window.start.date().isoformat(), "max_date": window.end.date().isoformat()}
    yield from _build(context, dbt, recgen, {**dbt_vars(recgen), **day_vars})


def _build(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, recgen: RecgenResource, dbt_vars: dict[str, Any]
) -> Iterator[Any]:
    os.environ.update(recgen.dbt_env())  # the DuckDB file and memory settings profiles.yml reads
    with recgen.write_lock():
        yield from dbt.cli(["build", "--vars", json.dumps(dbt_vars)], context=context).stream()
