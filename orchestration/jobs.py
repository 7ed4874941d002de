"""Jobs: the whole graph, and the data refresh that the inbox sensor starts."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.dbt import recgen_dbt_models

all_assets_job = dg.define_asset_job(
    "recgen_all",
    selection=dg.AssetSelection.all(),
    description="Materialize every asset: ingest, dbt, models, generation, reports, bento.",
)

data_refresh_job = dg.define_asset_job(
    "data_refresh",
    selection=dg.AssetSelection.groups("ingest") | dg.AssetSelection.assets(recgen_dbt_models),
    description="Ingest the snapshot and new inbox files, then rebuild the dbt models and run their checks.",
)
