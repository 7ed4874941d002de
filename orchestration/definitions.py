"""The recgen code location: assembles assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from models.settings import get_settings
from orchestration.assets.dbt import recgen_daily_dbt_models, recgen_dbt_models
from orchestration.assets.generation import content_generator, generated_content
from orchestration.assets.ingest import raw_tables
from orchestration.assets.ml import ml_assets
from orchestration.assets.monitoring import monitoring_assets
from orchestration.assets.serving import recgen_bento
from orchestration.checks.generation import generation_checks
from orchestration.checks.ml import ml_checks
from orchestration.checks.monitoring import monitoring_checks
from orchestration.checks.quality import gx_checks
from orchestration.drift_sensor import build_drift_sensor
from orchestration.jobs import all_assets_job, daily_job, daily_refresh_job, data_refresh_job, retrain_job
from orchestration.resources import RecgenResource, dbt_resource
from orchestration.schedules import daily_refresh_schedule, retrain_schedule
from orchestration.sensors import inbox_sensor

EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}

defs = dg.Definitions(
    assets=[
        raw_tables,
        recgen_dbt_models,
        recgen_daily_dbt_models,
        *ml_assets,
        content_generator,
        generated_content,
        *monitoring_assets,
        recgen_bento,
    ],
    asset_checks=[*gx_checks, *ml_checks, *generation_checks, *monitoring_checks],
    jobs=[all_assets_job, daily_refresh_job, data_refresh_job, retrain_job, daily_job],
    schedules=[daily_refresh_schedule, retrain_schedule],
    sensors=[inbox_sensor, build_drift_sensor(retrain_job)],
    resources={"recgen": RecgenResource(), "dbt": dbt_resource()},
    executor=EXECUTORS[get_settings().dagster_executor],
)
