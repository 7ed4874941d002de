"""Jobs: the whole graph, the data refresh the inbox sensor starts, the retrain the drift sensor starts, and
the daily content job over the day-partitioned generation asset."""

import dagster as dg

from orchestration.assets.dbt import recgen_dbt_models
from orchestration.assets.generation import generated_content

# A job runs one partitions definition: the day-partitioned content has a job (and schedule) of its own.
partitioned = dg.AssetSelection.assets(generated_content)

all_assets_job = dg.define_asset_job(
    "recgen_all",
    selection=dg.AssetSelection.all() - partitioned,
    description="Materialize every unpartitioned asset: ingest, dbt, models, reports, bento.",
)

data_refresh_job = dg.define_asset_job(
    "data_refresh",
    selection=dg.AssetSelection.groups("ingest") | dg.AssetSelection.assets(recgen_dbt_models),
    description="Ingest the snapshot and new inbox files, then rebuild the dbt models and run their checks.",
)

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.groups("models").downstream() - partitioned,
    description="Retrain every model on the current marts, re-evaluate, re-report and rebuild the bento.",
)

daily_content_job = dg.define_asset_job(
    "daily_content",
    selection=partitioned,
    partitions_def=generated_content.partitions_def,
    description="Personalized copy for the day's active users and their top recommendations.",
)
