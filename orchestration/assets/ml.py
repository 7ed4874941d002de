"""Models stage: item embeddings -> profile model -> user profiles / retrieval index / ranker / baselines -> evaluation
-> full_stack_champion.

Thin adapters over ``models.evaluation`` (the evaluation protocol is stated in its docstring). Each asset reads the marts under the warehouse lock, lets go of it, trains,
registers what it trained in the model registry (``<home>/artifacts`` + ``ml.registry``), and writes its results
back under the lock. Downstream assets load the newest registered version of what they need.
No ``from __future__ import annotations`` here: Dagster reads the context annotation at definition time.
"""

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from models import evaluation as training
from models.encoders import TextEncoder, embed_items, write_item_embeddings
from models.interests import build_interest_profiles
from models.ranking.blended_ranker import load_stacked_ranker
from models.ranking.pair_features import feature_schema
from models.ranking.pair_ranker import Ranker
from models.recdata import RecData, write_frame
from models.recommender import StackedFullStack, StackFit, StackSources, TwoTowerRecommender
from models.registry import ArtifactVersion, ModelRegistry, data_snapshot_id, marts_snapshot_stats
from models.retrieval.two_tower import TwoTowerRetriever, evaluate_retrieval
from models.settings import Settings
from models.torch_utils import limit_cpu_threads
from orchestration.resources import RecgenResource

GROUP = "models"
MART_DEPS = [
    dg.AssetKey(name)
    for name in (
        "interactions",
        "split_boundaries",
        "user_histories",
        "user_features",
        "item_features",
        "training_samples",
    )
]


def _markdown(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=".4f"))


def _read_data(recgen: RecgenResource) -> tuple[Settings, RecData, str]:
    """Settings, the marts + embeddings as RecData, and the data snapshot id; the lock is released on return.

    Every training asset starts here, so this is also where torch's thread count is set from the settings.
    """
    settings = recgen.settings()
    limit_cpu_threads(settings.torch_threads)
    with recgen.connect() as con:
        frames = training.read_marts(con)
        embeddings = training.read_item_embeddings(con)
        snapshot = data_snapshot_id(marts_snapshot_stats(con))
    if embeddings is None:
        raise dg.Failure("ml.item_embeddings is missing: materialize item_embeddings first")
    return settings, training.build_data(frames, embeddings), snapshot


def _upstream(context: dg.AssetExecutionContext, registry: ModelRegistry, name: str) -> ArtifactVersion:
    """The version of model ``name`` that the asset of the same name last materialized (its ``version`` metadata).

    That is the lineage the UI shows: a downstream asset loads what its upstream asset produced, not whatever was
    registered last (a benchmark or a notebook may register versions too). Only where this Dagster instance has
    no materialization of the asset (a registry filled outside Dagster) is the registry's newest version used,
    with a warning.
    """
    event = context.instance.get_latest_materialization_event(dg.AssetKey(name))
    version = (
        event.asset_materialization.metadata.get("version") if event and event.asset_materialization else None
    )
    if version is not None:
        return registry.get(name, str(version.value))
    found = registry.latest(name)
    if found is None:
        raise dg.Failure(f"no registered {name!r}: materialize the {name} asset first")
    context.log.warning(
        f"no materialization of the {name} asset in this instance: using the registry's newest {name} {found.version}"
    )
    return found


@dataclass
class _Inputs:
    """What the model assets start from: settings, data, its snapshot id, the registry and the profile model the profile_model asset last materialized."""

    settings: Settings
    data: RecData
    snapshot: str
    registry: ModelRegistry
    profile: ArtifactVersion
    encoder: TwoTowerRetriever


def _inputs_with_profile_model(context: dg.AssetExecutionContext, recgen: RecgenResource) -> _Inputs:
    settings, data, snapshot = _read_data(recgen)
    registry = ModelRegistry.from_settings(settings)
    profile = _upstream(context, registry, "profile_model")
    encoder = TwoTowerRetriever.load(profile.path, settings.resolved_device)
    return _Inputs(settings, data, snapshot, registry, profile, encoder)


def _register(
    registry: ModelRegistry,
    snapshot: str,
    name: str,
    save: Callable[[Path], None],
    *,
    metrics: Mapping[str, object],
    config: Mapping[str, object],
    feature_schema: Mapping[str, object] | None = None,
    promote: bool = True,
    promote_metric: str = "ndcg@10",
) -> tuple[ArtifactVersion, bool]:
    """Register a new version of ``name`` trained on data ``snapshot``; promote it if it beats the champion.

    Returns the version and whether it is the champion now (False when ``promote`` is off).
    """
    artifact = registry.register(
        name, save, metrics=metrics, config=config, feature_schema=feature_schema, data_snapshot_id=snapshot
    )
    promoted = registry.promote_if_better(name, artifact.version, promote_metric) if promote else False
    return artifact, promoted


def _model_metadata(
    artifact: ArtifactVersion,
    promoted: bool,
    fields: Mapping[str, Any],
    *,
    training: tuple[float, pd.DataFrame, str] | None = None,
) -> dict[str, Any]:
    """The Dagster metadata of an asset that registered a model version, then the asset's own ``fields``.

    ``training`` is ``(seconds, epochs, rate_column)`` for a trained model: its wall time, the median of the
    per-epoch throughput column and the per-epoch table.
    """
    metadata: dict[str, Any] = {
        "version": artifact.version,
        "path": dg.MetadataValue.path(str(artifact.path)),
        "promoted_to_champion": promoted,
        "data_snapshot_id": artifact.data_snapshot_id,
    }
    if training is not None:
        seconds, epochs, rate_column = training
        metadata["train_seconds"] = round(seconds, 1)
        metadata[rate_column] = float(epochs[rate_column].median()) if len(epochs) else 0.0
        metadata["epochs"] = _markdown(epochs)
    return {**metadata, **fields}


def _model_row(result: training.EvaluationResult, model: str) -> dict[str, Any]:
    """One model's row of an evaluation table, as {metric: value}."""
    return result.table.set_index("model").loc[model].to_dict()


@dg.asset(
    group_name=GROUP,
    deps=[dg.AssetKey("item_features")],
    kinds={"pytorch", "duckdb"},
    pool="duckdb",
    description="ml.item_embeddings: one text embedding per item (title. body), re-encoded only when its content changed",
)
def item_embeddings(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings = recgen.settings()
    limit_cpu_threads(settings.torch_threads)
    with recgen.connect() as con:
        items = con.execute("select item_id, title, body, content_hash from marts.item_features").df()
        cache = training.read_item_embeddings(con)
    enc = settings.encoder
    encoder = TextEncoder(enc.model_name_or_path, settings.resolved_device, enc.batch_size, enc.max_length)
    started = time.perf_counter()
    embeddings = embed_items(items, encoder, cache)
    seconds = time.perf_counter() - started
    with recgen.connect() as con:
        write_item_embeddings(con, embeddings)
    context.log.info(f"encoded {encoder.n_encoded} of {len(items)} items in {seconds:.1f}s")
    return dg.MaterializeResult(
        metadata={
            "n_items": len(embeddings),
            "n_encoded": encoder.n_encoded,
            "n_reused_from_cache": len(embeddings) - encoder.n_encoded,
            "encoder_name": encoder.name,
            "encoder_version": encoder.version,
            "dim": encoder.dim,
            "device": settings.resolved_device,
            "encode_seconds": round(seconds, 2),
            "items_per_s": round(encoder.n_encoded / seconds, 1)
            if encoder.n_encoded and seconds > 0
            else 0.0,
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[item_embeddings, *MART_DEPS],
    kinds={"pytorch"},
    pool="duckdb",
    description="Two-tower profile model (history encoder + item tower), trained on train-split histories; "
    "registered as 'profile_model'",
)
def profile_model(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings, data, snapshot = _read_data(recgen)
    started = time.perf_counter()
    encoder, epochs = training.fit_profile_model(settings, data)
    seconds = time.perf_counter() - started
    valid = evaluate_retrieval(encoder, data, "valid", max_users=settings.evaluation.max_users)
    artifact, promoted = _register(
        ModelRegistry.from_settings(settings),
        snapshot,
        "profile_model",
        encoder.save,
        metrics={"ndcg@10": valid["ndcg@10"], "recall@20": valid["recall@20"], "train_seconds": seconds},
        config={"profile": settings.profile.model_dump(), "device": settings.resolved_device},
        feature_schema={
            "history": "item id, projected text embedding, category; dwell, rating, recency bucket, position",
            "item_text_dim": int(data.item_text.shape[1]),
        },
    )
    fields = {
        "valid_ndcg@10": valid["ndcg@10"],
        "valid_recall@20": valid["recall@20"],
        "device": settings.resolved_device,
    }
    return dg.MaterializeResult(
        metadata=_model_metadata(artifact, promoted, fields, training=(seconds, epochs, "examples_per_s"))
    )


@dg.asset(
    group_name=GROUP,
    deps=[profile_model],
    kinds={"duckdb"},
    pool="duckdb",
    description="ml.user_profiles: each user's readable InterestProfile (JSON) and profile-model vector, as of now",
)
def user_profiles(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    inputs = _inputs_with_profile_model(context, recgen)
    settings, data, artifact, encoder = inputs.settings, inputs.data, inputs.profile, inputs.encoder
    users = data.users["user_id"].tolist()
    profiles = build_interest_profiles(
        data, users, top_k=5, n_keywords=settings.profile.top_keywords,
        min_topicality=settings.profile.keyword_min_topicality,
    )  # fmt: skip
    two_tower = TwoTowerRecommender(encoder, settings.profile.cold_start_interest_weight).fit(data)
    vectors = two_tower.user_vectors(users)
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "profile": [json.dumps(profiles[u].to_dict()) for u in users],
            "segment": [profiles[u].segment for u in users],
            "cold_start": [profiles[u].cold_start for u in users],
            "n_events": [profiles[u].n_events for u in users],
            "top_category": [
                profiles[u].top_categories[0][0] if profiles[u].top_categories else None for u in users
            ],
            "embedding": list(vectors.cpu().numpy().astype(np.float32)),
            "profile_model_version": artifact.version,
            "updated_at": now,
        }
    )
    with recgen.connect() as con:
        write_frame(con, "ml.user_profiles", frame, list_columns=("embedding",))
    cold = int(frame["cold_start"].sum())
    return dg.MaterializeResult(
        metadata={
            "n_users": len(frame),
            "n_cold_start": cold,
            "n_segments": int(frame["segment"].nunique()),
            "profile_model_version": artifact.version,
            "preview": _markdown(
                frame[["user_id", "segment", "cold_start", "n_events", "top_category"]].head(10)
            ),
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[profile_model],
    kinds={"pytorch"},
    pool="duckdb",
    description="Retrieval index over the whole catalog as of now (exact, or IVF above the ANN threshold); "
    "registered as 'retrieval_index'",
)
def retrieval_index(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    inputs = _inputs_with_profile_model(context, recgen)
    settings, data, profile, encoder = inputs.settings, inputs.data, inputs.profile, inputs.encoder
    started = time.perf_counter()
    index = training.build_retrieval(settings, data, encoder)
    build_seconds = time.perf_counter() - started
    two_tower = TwoTowerRecommender(encoder, settings.profile.cold_start_interest_weight).fit(data)
    users = [u for u in data.users["user_id"] if u in two_tower.store.offsets]
    started = time.perf_counter()
    vectors = two_tower.user_vectors(users)
    index.ensure_ann(vectors)  # above the ANN threshold: probe count calibrated on these users' queries
    index.search(vectors, settings.retrieval.n_candidates, data.exclusions(users))
    search_seconds = time.perf_counter() - started
    artifact, promoted = _register(
        inputs.registry,
        inputs.snapshot,
        "retrieval_index",
        index.save,
        metrics={"users_per_s": len(users) / search_seconds if search_seconds > 0 else float("nan")},
        config={"profile_model_version": profile.version, "retrieval": settings.retrieval.model_dump()},
        feature_schema={"item_vectors": "profile-model item tower, unit norm", "bias": "per-item logit bias"},
        promote=False,
    )
    fields = {
        "n_items": index.n_items,
        "dim": int(index.space.vecs.shape[1]),
        "ann": index.ann is not None,
        "build_seconds": round(build_seconds, 3),
        "search_users_per_s": round(len(users) / search_seconds, 1) if search_seconds > 0 else 0.0,
        "profile_model_version": profile.version,
    }
    return dg.MaterializeResult(metadata=_model_metadata(artifact, promoted, fields))


@dg.asset(
    group_name=GROUP,
    deps=[profile_model, retrieval_index],
    kinds={"pytorch"},
    pool="duckdb",
    description="The full stack's ranker (settings.ranker.kind). 'stacked' (default): the listwise stacked ranker "
    "over the two-tower, EASE, item-kNN, popular and recency-popular candidates (their hyperparameters chosen on "
    "valid), trained by time-based stacking on windows before valid (features as of each window's start, labels "
    "from the window), epochs and MMR weight chosen on valid. 'pair': the deep pair ranker trained on "
    "marts.training_samples. Registered as 'ranker'",
)
def ranker(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    inputs = _inputs_with_profile_model(context, recgen)
    settings, data, profile, encoder = inputs.settings, inputs.data, inputs.profile, inputs.encoder
    if settings.ranker.kind == "stacked":
        return _stacked_ranker(context, inputs)
    started = time.perf_counter()
    model, epochs = training.fit_ranker(settings, data, encoder)
    seconds = time.perf_counter() - started
    # request-level NDCG@10 of the valid impressions (the early-stopping figure) and impression AUC, best epoch
    best = epochs.sort_values("valid_ndcg@10", ascending=False).iloc[0] if len(epochs) else None
    valid_ndcg = float(best["valid_ndcg@10"]) if best is not None else float("nan")
    valid_auc = float(best["valid_auc"]) if best is not None else float("nan")
    artifact, promoted = _register(
        inputs.registry,
        inputs.snapshot,
        "ranker",
        model.save,
        # NDCG@10 over the items of one valid slate (request), not over the catalog: named for what it is
        metrics={"slate_ndcg@10": valid_ndcg, "auc": valid_auc, "train_seconds": seconds},
        promote_metric="slate_ndcg@10",
        config={
            "kind": "pair",
            "ranker": settings.ranker.model_dump(),
            "profile_model_version": profile.version,
            "device": settings.resolved_device,
        },
        feature_schema=feature_schema(),
    )
    fields = {
        "valid_auc": valid_auc,
        "valid_slate_ndcg@10": valid_ndcg,
        "epochs_run": len(epochs),
        "profile_model_version": profile.version,
    }
    return dg.MaterializeResult(
        metadata=_model_metadata(artifact, promoted, fields, training=(seconds, epochs, "samples_per_s"))
    )


def _stacked_ranker(context: dg.AssetExecutionContext, inputs: "_Inputs") -> dg.MaterializeResult:
    settings, data, profile = inputs.settings, inputs.data, inputs.profile
    started = time.perf_counter()
    tuned = training.tune_sources(settings, data)
    sources, n_per_source, fit = training.fit_stack(settings, data, inputs.encoder, tuned, settings.seed)
    seconds = time.perf_counter() - started
    # full-ranking NDCG@10 on valid of the stack at the chosen MMR weight (relevant items outside the
    # candidates count as misses)
    valid_ndcg = float(fit.mmr_table["holdout_ndcg@10"].max()) if len(fit.mmr_table) else float("nan")
    config = {
        "kind": "stacked",
        "sources": sources.config(),
        "tuned": tuned,
        "n_per_source": n_per_source,
        "mmr_lambda": fit.mmr_lambda,
        "epochs": fit.epochs,
        "candidate_recall": fit.candidate_recall,
        "ranker": settings.ranker.model_dump(),
        "profile_model_version": profile.version,
        "device": settings.resolved_device,
    }
    artifact, promoted = _register(
        inputs.registry,
        inputs.snapshot,
        "ranker",
        fit.ranker.save,
        metrics={"valid_ndcg@10": valid_ndcg, "train_seconds": seconds},
        promote_metric="valid_ndcg@10",
        config=config,
        feature_schema={"features": fit.ranker.feature_names},
    )
    fields = {
        "kind": "stacked",
        "valid_ndcg@10": valid_ndcg,
        "valid_candidate_recall": fit.candidate_recall,
        "mmr_lambda": fit.mmr_lambda,
        "stack_epochs": fit.epochs,
        "tuned_sources": dg.MetadataValue.json(tuned),
        "candidates_per_source": dg.MetadataValue.json(n_per_source),
        "mmr_grid": _markdown(fit.mmr_table),
        "profile_model_version": profile.version,
    }
    return dg.MaterializeResult(
        metadata=_model_metadata(artifact, promoted, fields, training=(seconds, fit.log, "seconds"))
    )


@dg.asset(
    group_name=GROUP,
    deps=[item_embeddings, *MART_DEPS],
    kinds={"pytorch"},
    pool="duckdb",
    description="Baselines (popularity, item-kNN, BPR-MF) fitted on everything before valid and scored on valid; "
    "registered under their names",
)
def baselines(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings, data, snapshot = _read_data(recgen)
    view = data.as_of(data.split_start("valid"))
    models = training.fit_baselines(settings, view)
    valid = training.evaluate_models(settings, data, models, "valid")
    registry = ModelRegistry.from_settings(settings)
    versions: dict[str, str] = {}
    for name, model in models.items():
        artifact, _ = _register(
            registry,
            snapshot,
            name,
            model.save,
            metrics=_model_row(valid, name),
            config={"fitted_before": str(view.now)},
        )
        versions[name] = artifact.version
    return dg.MaterializeResult(
        metadata={"valid": _markdown(valid.table), "versions": dg.MetadataValue.json(versions)}
    )


def _write_evaluation(
    con: duckdb.DuckDBPyConnection,
    valid: training.EvaluationResult,
    test: training.EvaluationResult,
    version: str,
) -> None:
    stamp = pd.Timestamp.now(tz="UTC").tz_localize(None)
    table = pd.concat(
        [valid.table.assign(split="valid"), test.table.assign(split="test")], ignore_index=True
    ).reindex(columns=[*training.TABLE_COLUMNS, "split"])
    write_frame(con, "ml.evaluation", table.assign(full_stack_version=version, evaluated_at=stamp))
    groups = pd.concat(
        [valid.groups.assign(split="valid"), test.groups.assign(split="test")], ignore_index=True
    )
    write_frame(con, "ml.evaluation_groups", groups.assign(evaluated_at=stamp))
    write_frame(con, "ml.eval_recommendations", test.recommendations.assign(evaluated_at=stamp))


def _train_seconds(artifact: ArtifactVersion) -> float:
    seconds = artifact.metric("train_seconds")
    return seconds if np.isfinite(seconds) else 0.0


@dg.asset(
    group_name=GROUP,
    deps=[profile_model, ranker, retrieval_index, baselines],
    kinds={"pytorch", "duckdb"},
    pool="duckdb",
    description="Offline evaluation of every model on the TEST split under one protocol (models/evaluation.py: "
    "learn on train, choose on valid, no refit; settings.evaluation.seeds seeds; paired bootstrap of full_stack "
    "vs the best baseline): ml.evaluation, ml.evaluation_groups, ml.eval_recommendations, "
    "reports/evaluation.csv and evaluation.png. Registers 'full_stack' without promoting it",
)
def evaluation(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings, data, snapshot = _read_data(recgen)
    registry = ModelRegistry.from_settings(settings)
    ranker_version = _upstream(context, registry, "ranker")
    # lineage: the profile model the ranker was trained with (its recorded version), not merely the newest one
    profile = registry.get("profile_model", str(ranker_version.config["profile_model_version"]))
    encoder = TwoTowerRetriever.load(profile.path, settings.resolved_device)
    inputs = _Inputs(settings, data, snapshot, registry, profile, encoder)
    stacked = settings.ranker.kind == "stacked"
    if stacked != (ranker_version.config.get("kind", "pair") == "stacked"):
        raise dg.Failure(
            f"the ranker asset's latest version ({ranker_version.version}) is not of settings.ranker.kind "
            f"{settings.ranker.kind!r}: materialize ranker first"
        )
    seeds = list(settings.evaluation.seeds)
    # the first seed's neural models are the ones the profile_model and ranker assets trained (with
    # settings.seed); further seeds are trained here, on train, with the same settings
    if stacked:
        stack = load_stacked_ranker(ranker_version.path, data.item_text, settings.resolved_device)
        cfg = ranker_version.config
        fit = StackFit(stack, float(cfg["mmr_lambda"]), int(cfg["epochs"]), pd.DataFrame(), pd.DataFrame(),
                       float(cfg.get("candidate_recall", float("nan"))))  # fmt: skip
        trained = {
            seeds[0]: training.NeuralModels(
                encoder, None, _train_seconds(profile), _train_seconds(ranker_version), fit
            )
        }
    else:
        model = Ranker.load(ranker_version.path, settings.resolved_device)
        trained = {
            seeds[0]: training.NeuralModels(
                encoder, model, _train_seconds(profile), _train_seconds(ranker_version)
            )
        }
    valid, test = training.run_protocol(
        settings, data, training.all_specs(settings, data, trained), seeds=seeds
    )
    table = test.table
    report = training.write_report(table, settings.reports_dir)
    training.write_report(test.groups, settings.reports_dir, "evaluation_groups.csv")
    training.write_report(test.tuning, settings.reports_dir, "evaluation_tuning.csv")
    plot = training.plot_evaluation(
        table, settings.reports_dir / "evaluation.png", f"Test split, {len(seeds)} seeds ({settings.dataset})"
    )
    chosen = json.loads(table.set_index("model").loc["full_stack", "params"])
    # the model to serve: the first seed's weights, indexed on everything up to now; promoted only by
    # full_stack_champion, after the blocking full_stack_beats_baselines check passed
    if stacked:
        weight = 0.0
        sources = StackSources.from_tuned(chosen["tuned"], encoder, settings)
        served = StackedFullStack(
            sources, training.stack_candidates(settings, True), fit.ranker, fit.mmr_lambda, encoder
        ).fit(data)
        stack_config = {"sources": sources.config(), "mmr_lambda": fit.mmr_lambda}
    else:
        weight = float(chosen["retrieval_weight"])
        served = training.full_stack(settings, encoder, model, weight).fit(data)
        stack_config = {"retrieval_weight": weight, "mmr_lambda": settings.ranker.mmr_lambda}
    valid_row = _model_row(valid, "full_stack")
    test_row = _model_row(test, "full_stack")
    artifact, _ = _register(
        inputs.registry,
        inputs.snapshot,
        "full_stack",
        served.save,
        metrics={**valid_row, **{f"test_{k}": v for k, v in test_row.items() if k != "params"}},
        config={
            "profile_model_version": profile.version,
            "ranker_version": ranker_version.version,
            "kind": settings.ranker.kind,
            **stack_config,
            "seeds": seeds,
        },
        feature_schema={"features": fit.ranker.feature_names} if stacked else feature_schema(),
        promote=False,
    )
    with recgen.connect() as con:
        _write_evaluation(con, valid, test, artifact.version)
    wins, message = training.full_stack_wins(table)
    context.log.info(message)
    shown = table.drop(columns=["params"])
    fields: dict[str, Any] = {
        "test": _markdown(shown),
        "valid": _markdown(valid.table),
        "plot": dg.MetadataValue.path(str(plot)),
        "plot_markdown": dg.MetadataValue.md(f"![evaluation]({plot.as_uri()})"),
        "tuning": _markdown(test.tuning),
        "retrieval_weight": weight,
        "seeds": dg.MetadataValue.json(seeds),
        "full_stack_beats_baselines": wins,
        "comparison": message,
        "bootstrap": dg.MetadataValue.json(test.comparison),
        "report": dg.MetadataValue.path(str(report)),
        "n_test_users": int(test.timings.get("n_users", 0)),
        "profile_model_version": profile.version,
        "ranker_version": ranker_version.version,
    }
    for column in training.METRIC_COLUMNS:
        fields[f"full_stack_{column}"] = float(test_row[column])
    for key, value in test.timings.items():
        if key.endswith("users_per_s"):
            fields[key] = round(value, 1)
    return dg.MaterializeResult(metadata=_model_metadata(artifact, False, fields))


def read_test_table(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The latest evaluation's test rows of ``ml.evaluation`` (empty when it does not exist)."""
    from models.data.warehouse import table_exists

    if not table_exists(con, "ml.evaluation"):
        return pd.DataFrame()
    return con.execute("select * from ml.evaluation where split = 'test'").df()


@dg.asset(
    group_name=GROUP,
    deps=[evaluation],
    kinds={"python"},
    description="Makes the full_stack version the evaluation registered the champion (what bentoml serve loads) "
    "when its paired 95% interval of NDCG@10 against the best baseline lies above 0 (a win); a tie (the "
    "interval holds 0) only makes a first champion of an empty registry. Downstream of the blocking "
    "full_stack_beats_baselines check: a run where the full stack lost never gets here",
)
def full_stack_champion(context: dg.AssetExecutionContext, recgen: RecgenResource) -> dg.MaterializeResult:
    settings = recgen.settings()
    with recgen.connect() as con:
        table = read_test_table(con)
    if table.empty or "full_stack" not in set(table["model"]):
        raise dg.Failure("ml.evaluation has no full_stack test row: materialize evaluation first")
    version = str(table["full_stack_version"].iloc[0])
    registry = ModelRegistry.from_settings(settings)
    before = registry.champion("full_stack")
    verdict, message = training.full_stack_verdict(table)
    if not training.may_promote(verdict, before is not None) and settings.evaluation.gate_promotion:
        # the same gate as the check, so materializing this asset alone cannot promote a loser (or let a tie
        # replace a champion)
        context.log.warning(f"full_stack {version} is not promoted ({verdict}): {message}")
        return dg.MaterializeResult(
            metadata={
                "candidate_version": version,
                "verdict": verdict,
                "promoted_to_champion": False,
                "champion_version": before.version if before else "none",
                "comparison": message,
            }
        )
    promoted = registry.promote_if_better("full_stack", version)
    champion = registry.champion("full_stack")
    return dg.MaterializeResult(
        metadata={
            "candidate_version": version,
            "promoted_to_champion": promoted,
            "champion_version": champion.version if champion else "none",
            "previous_champion": before.version if before else "none",
            "verdict": verdict,
            "comparison": message,
        }
    )


ml_assets = [
    item_embeddings,
    profile_model,
    user_profiles,
    retrieval_index,
    ranker,
    baselines,
    evaluation,
    full_stack_champion,
]
