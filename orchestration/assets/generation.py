"""Generation assets: the copy generator (trained or fine-tuned, registered) and the daily personalized copy.

Thin adapters over ``models.generation``. The warehouse lock is held only to read inputs and write results:
training and generation run on copies (the cache is copied into an in-memory DuckDB for the run).
No ``from __future__ import annotations`` here: Dagster reads the context annotation at definition time.
"""

import datetime as dt
import shutil
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
import pandas as pd

from models.generation import cache, daily
from models.generation.artifacts import (
    find_version,
    load_generator,
    promote_generator,
    register_pretrained,
    register_trained,
)
from models.generation.evaluation import evaluate, sample_rows, write_summary
from models.generation.service import build_requests, generate_content, items_by_id, request_fields
from models.generation.train import fine_tune, lm_version, train_default_lm
from models.registry import ModelRegistry, data_snapshot_id, marts_snapshot_stats
from models.settings import Settings
from models.torch_utils import limit_cpu_threads
from orchestration.partitions import daily_partitions
from orchestration.resources import RecgenResource

if TYPE_CHECKING:
    from models.recommender import Recommender

ITEM_DEPS = [dg.AssetKey("item_features")]
DAILY_DEPS = [dg.AssetKey("interactions"), dg.AssetKey("user_features"), dg.AssetKey("user_histories")]
# Profiles (ml.user_profiles) and the champion recommender (registered by the evaluation asset).
ML_DEPS = [dg.AssetKey("user_profiles"), dg.AssetKey("full_stack_champion")]


def _snapshot_id(con: duckdb.DuckDBPyConnection) -> str:
    try:
        return data_snapshot_id(marts_snapshot_stats(con))
    except duckdb.Error:  # a mart is missing (partial warehouse): the registry accepts an empty snapshot id
        return ""


@dg.asset(
    group_name="generation",
    deps=ITEM_DEPS,
    kinds={"pytorch", "transformers"},
    description="The copy generator: the own small GPT-2-style LM trained on the catalog's texts (default) or "
    "a configured pretrained model (generation.model_name_or_path), fine-tuned unless generation.fine_tune is "
    "false; registered as model 'generator' in the registry (ml.registry).",
)
def content_generator(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings = recgen.settings()
    limit_cpu_threads(settings.torch_threads)  # RECGEN_TORCH_THREADS=1 on a shared CPU (see torch_utils)
    gen = settings.generation
    with recgen.connect() as con:
        items = daily.read_items(con)
        snapshot = _snapshot_id(con)
    if items.empty:
        raise dg.Failure("marts.item_features is empty: nothing to train the generator on")
    registry = ModelRegistry.from_settings(settings)
    base = gen.model_name_or_path
    if base and not gen.fine_tune:
        artifact = register_pretrained(registry, base, snapshot)
        return dg.MaterializeResult(
            metadata={
                "registry_version": artifact.version,
                "model_version": artifact.config["model_version"],
                "source": base,
                "path": dg.MetadataValue.path(str(artifact.path)),
            }
        )
    version = lm_version(items, gen, settings.seed, base=base)
    artifact = find_version(registry, version)
    reused = artifact is not None
    if artifact is None:
        # Train outside the registry dir, then let the registry copy it into a complete version dir.
        work = settings.home / "work" / f"generator-{version}"
        try:
            if base:
                result = fine_tune(
                    base, items, gen, work, seed=settings.seed, device=settings.resolved_device
                )
            else:
                result = train_default_lm(
                    items, gen, work, seed=settings.seed, device=settings.resolved_device
                )
            extra = {"n_items": len(items), "n_heldout_items": len(result.heldout_items)}
            artifact = register_trained(registry, result, snapshot, extra=extra)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:
        promote_generator(registry, artifact.version)
    metrics = artifact.metrics
    context.log.info(
        "generator %s (%s): loss %.3f -> %.3f",
        artifact.version,
        version,
        metrics["loss_before"],
        metrics["loss_after"],
    )
    return dg.MaterializeResult(
        metadata={
            "registry_version": artifact.version,
            "model_version": version,
            "reused": reused,
            "base_model": base or "none (trained from scratch)",
            "loss_before": dg.MetadataValue.float(float(metrics["loss_before"])),
            "loss_after": dg.MetadataValue.float(float(metrics["loss_after"])),
            "train_seconds": dg.MetadataValue.float(float(metrics.get("train_seconds") or 0.0)),
            "n_examples": int(metrics.get("n_examples") or 0),
            "n_items": len(items),
            "heldout_items": int(artifact.config.get("n_heldout_items") or 0),
            "loss": "validation loss on the examples of held-out items (never trained on)",
            "path": dg.MetadataValue.path(str(artifact.path)),
        }
    )


def _champion_recommender(settings: Settings) -> "Recommender | None":
    from models.recommender import Recommender

    try:
        return Recommender.load(settings)
    except FileNotFoundError:  # no champion yet: profiles and recommendations come from the marts
        return None


@dg.asset(
    group_name="generation",
    deps=[content_generator, *ITEM_DEPS, *DAILY_DEPS, *ML_DEPS],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    kinds={"transformers", "duckdb"},
    pool="duckdb",
    description="Personalized copy (generation.tasks) for the top generation.top_n_items recommendations of the "
    "day's active users (at most generation.max_users), behind guardrails, cached by (content hash, segment, "
    "task, style, model version); stored in generation.generated_content.",
)
def generated_content(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings = recgen.settings()
    limit_cpu_threads(settings.torch_threads)  # RECGEN_TORCH_THREADS=1 on a shared CPU (see torch_utils)
    gen = settings.generation
    day = dt.date.fromisoformat(context.partition_key)
    generator = load_generator(settings)
    with recgen.connect() as con:
        users = daily.active_users(con, day, gen.max_users)
        items = daily.read_items(con)
        recs = daily.stored_recommendations(con, users, day, gen.top_n_items)
        cached = cache.read_frame(con, generator.version_for(gen))
        stored_profiles = daily.stored_profiles(con, users)
        marts_profiles = daily.profiles_from_marts(con, users, day)
    recommender = _champion_recommender(settings) if users and recs is None else None

    def popular(profiles: dict) -> pd.DataFrame:
        with recgen.connect() as con:
            return daily.popular_recommendations(con, profiles, gen.top_n_items)

    profiles, profile_source, recs, rec_source = daily.choose_inputs(
        users, recs, stored_profiles, marts_profiles, recommender, gen.top_n_items, popular
    )
    item_texts = items_by_id(items)
    requests = build_requests(
        recs[["user_id", "item_id"]].itertuples(index=False), item_texts, profiles, gen.tasks
    )

    # Work on an in-memory copy of this version's cache so the warehouse lock is not held while generating.
    work = duckdb.connect()
    cache.write_frame(work, cached)
    before = generator.stats()
    rows = generate_content(requests, generator, work, gen)
    after = generator.stats()
    new_cache = cache.read_frame(work, generator.version_for(gen))
    work.close()
    stats = {
        k: after[k] - before[k]
        for k in ("model_calls", "generated_tokens", "generation_seconds", "second_attempts")
        if k in after
    }
    stats["tokens_per_s"] = (
        stats["generated_tokens"] / stats["generation_seconds"] if stats["generation_seconds"] else 0.0
    )
    from models.encoders import TextEncoder

    encoder = TextEncoder(
        gen.lift_encoder or settings.encoder.model_name_or_path, batch_size=64, max_length=128
    )
    heldout = generator.heldout_items
    # The day's recommendations rarely reach held-out items: a probe writes some for the day's users (not
    # published, not cached) so the heldout_* figures measure copy of items the generator never saw.
    probe_requests = daily.heldout_probe(
        requests, item_texts, profiles, heldout, gen.heldout_probe_users, gen.heldout_probe_items, gen.tasks
    )
    probe = generate_content(probe_requests, generator, None, gen) if probe_requests else []
    figures = evaluate(
        rows, item_texts, profiles, stats, heldout_items=heldout, embed=encoder.encode, heldout_probe=probe
    )
    with recgen.connect() as con:
        cache.write_frame(con, cache.new_rows(new_cache, cached))
        stored = daily.store_content(con, day, rows, [request_fields(r)[1] for r in requests])
    summary_path = write_summary(
        {**figures, "day": day.isoformat()}, settings.reports_dir / "generation_summary.json"
    )
    preview = pd.DataFrame([r.to_dict() for r in sample_rows(rows, per_style=5)])
    if len(preview):
        preview["heldout_item"] = preview["item_id"].isin(heldout)
    metadata: dict[str, object] = {
        "rows": stored,
        "active_users": len(users),
        "users_with_copy": len({r.user_id for r in rows}),
        "recommendation_source": rec_source,
        "profile_source": profile_source,
        "model_version": generator.version_for(gen),
        "summary": dg.MetadataValue.path(str(summary_path.resolve())),
        "heldout_items_in_catalog": len(heldout),
        "fallback_reasons": dg.MetadataValue.json(figures["fallback_reasons"]),
        "heldout_fallback_reasons": dg.MetadataValue.json(figures["heldout_fallback_reasons"]),
    }
    for key, value in figures.items():
        if isinstance(value, float):
            metadata[key] = dg.MetadataValue.float(value)
        elif isinstance(value, int):
            metadata[key] = value
    if len(preview):
        columns = ["style", "task", "user_id", "item_id", "heldout_item", "text", "passed_guardrails"]
        metadata["samples_per_style"] = dg.MetadataValue.md(preview[columns].to_markdown(index=False))
    context.log.info("generated copy for %d users on %s: %s", len({r.user_id for r in rows}), day, figures)
    return dg.MaterializeResult(metadata=metadata)
