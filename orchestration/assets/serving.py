"""Serving: the BentoML bento of the recgen service, built for the current champion models."""

import dagster as dg

from bentos.build import build_bento
from models.registry import ModelRegistry
from orchestration.resources import RecgenResource

RECOMMENDER = "full_stack"  # registry name of the served recommender (bentos/serving.py loads the same)

# What the service loads at start: the champion recommender (promoted by `full_stack_champion`) and the
# champion generator (`content_generator`). The content cache is optional at start, so the day-partitioned
# `generated_content` is not a dependency (an unpartitioned asset after it would wait for every day).
UPSTREAM = [dg.AssetKey("full_stack_champion"), dg.AssetKey("content_generator")]


@dg.asset(
    group_name="serving",
    kinds={"bentoml"},
    deps=UPSTREAM,
    description=(
        "The recgen bento (bentos/bentofile.yaml) built with `bentoml build` after the champion models; "
        "labelled with the champion versions. The service loads the models from RECGEN_HOME when it starts."
    ),
)
def recgen_bento(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    """Build the bento with the venv's bentoml CLI and record its tag and store path."""
    settings = recgen.settings()
    registry = ModelRegistry.from_settings(settings)
    champion = registry.load_champion(RECOMMENDER)
    generator = registry.champion("generator")
    labels = {
        "recommender_version": champion.version,
        "generator_version": generator.version if generator is not None else "none",
        "data_snapshot_id": champion.data_snapshot_id or "none",
    }
    built = build_bento(labels=labels)
    context.log.info(f"built bento {built.tag} at {built.path} in {built.seconds} s")
    return dg.MaterializeResult(
        metadata={
            "bento_tag": dg.MetadataValue.text(built.tag),
            "path": dg.MetadataValue.path(str(built.path)),
            "recommender_version": dg.MetadataValue.text(champion.version),
            "generator_version": dg.MetadataValue.text(labels["generator_version"]),
            "build_seconds": dg.MetadataValue.float(built.seconds),
            "serve_command": dg.MetadataValue.text(
                f"RECGEN_HOME={settings.home.resolve()} RECGEN_DUCKDB_PATH={settings.database.resolve()} "
                f"bentoml serve {built.tag} --host 127.0.0.1 --port 3001"
            ),
        }
    )
