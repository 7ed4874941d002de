"""The recgen code location: assembles assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.dbt import recgen_dbt_models
from orchestration.assets.ingest import raw_tables
from orchestration.checks.quality import gx_checks
from orchestration.jobs import all_assets_job, data_refresh_job
from orchestration.resources import RecgenResource, dbt_resource
from orchestration.schedules import daily_refresh_schedule
from orchestration.sensors import inbox_sensor

defs = dg.Definitions(
    assets=[raw_tables, recgen_dbt_models],
    asset_checks=[*gx_checks],
    jobs=[all_assets_job, data_refresh_job],
    schedules=[daily_refresh_schedule],
    sensors=[inbox_sensor],
    resources={"recgen": RecgenResource(), "dbt": dbt_resource()},
)
