"""Jobs: one day of the whole graph (`make run`), the daily refresh (new data, scores, drift, copy), the data
refresh the inbox sensor starts, the retrain that its schedule and the drift sensor start, and the
day-partitioned assets alone (for backfills of past days).

A run of a day-partitioned job rebuilds the unpartitioned assets whole (ingest, features, models, the
quality and fairness reports, the bento) and the selected day's partition of the daily ones.
"""

import dagster as dg

from orchestration.assets.dbt import recgen_daily_dbt_models, recgen_dbt_models
from orchestration.assets.generation import generated_content
from orchestration.assets.monitoring import daily_scores, drift_report
from orchestration.partitions import daily_partitions

# Every asset built one day at a time: the daily dbt marts, the champion's scores, drift, the copy.
daily = dg.AssetSelection.assets(recgen_daily_dbt_models, daily_scores, drift_report, generated_content)

all_assets_job = dg.define_asset_job(
    "recgen_all",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Everything for one day: ingest, dbt, models, evaluation, reports and bento, plus the day's "
    "partition of the daily marts, scores, drift report and personalized copy.",
)

daily_refresh_job = dg.define_asset_job(
    "daily_refresh",
    selection=dg.AssetSelection.groups("ingest") | dg.AssetSelection.assets(recgen_dbt_models) | daily,
    partitions_def=daily_partitions,
    description="One day of new data against the current models: ingest and dbt, then the day's partition of "
    "the daily marts, the champion's scores, the drift report and the personalized copy.",
)

daily_job = dg.define_asset_job(
    "daily",
    selection=daily,
    partitions_def=daily_partitions,
    description="Only the day-partitioned assets (daily marts, scores, drift report, copy): backfill past days "
    "against the current models.",
)

data_refresh_job = dg.define_asset_job(
    "data_refresh",
    selection=dg.AssetSelection.groups("ingest") | dg.AssetSelection.assets(recgen_dbt_models),
    description="Ingest the snapshot and new inbox files, then rebuild the dbt models and run their checks.",
)

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.groups("models").downstream() - daily,
    description="Retrain every model on the current marts, re-evaluate, re-report and rebuild the bento.",
)
