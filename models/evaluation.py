"""The offline evaluation protocol, and the train / evaluate functions the Dagster assets call.

ONE protocol for every model, the baselines and the neural ones alike (``run_protocol``):

1. **Learn on train.** Each model's parameters are learned from the TRAIN view (``data.as_of(valid start)``):
   item-kNN's and EASE's item-item weights, BPR's factors, the two-tower and ranker weights.
2. **Choose on valid.** Hyperparameters and epochs are chosen on VALID NDCG@10 (full ranking, history = the
   train view): EASE's lambda, item-kNN's neighbours and shrinkage, the recency half-life, BPR's epoch (early
   stopping), the two-tower's and the ranker's epoch, the full stack's retrieval weight.
3. **No refit.** No model is refit on train + valid before test. At TEST every model ``observe``s the view as
   of the test cutoff: the users' histories through valid are its input, item engagement counts (popularity)
   and the published / excluded items are read as of the cutoff, and no weight changes, the way a model
   trained on a schedule serves between retrains. For the two-tower retriever and the full stack ``fit(view)``
   is already only that (their weights come from ``fit_profile_model`` / ``fit_ranker`` on train).
4. **Seeds.** Steps 1-3 run once per seed of ``settings.evaluation.seeds``; deterministic models (popularity,
   recency popularity, item-kNN, EASE) give the same figures for every seed and are fitted once.
5. **Metrics.** Full-ranking metrics over every user with at least one new engagement in the test window;
   items engaged with or rated before the window, and items not yet published at its start, are never
   recommended (by any model) and never count as relevant (``RecData.exclusions`` / ``RecData.relevant``).
   The table carries the mean over seeds, ``ndcg@10_std`` and ``recall@20_std`` (over seeds) and
   ``fit_seconds`` / ``eval_seconds`` (mean per seed).
6. **Comparison.** A paired bootstrap over test users of the NDCG@10 difference full_stack minus the best
   baseline (each user's NDCG averaged over seeds; ``settings.evaluation.bootstrap_samples`` resamples) gives
   the 95% interval in the full_stack row (``delta_ndcg@10``, ``delta_ci_low``, ``delta_ci_high``). The
   blocking ``full_stack_beats_baselines`` check passes only when the interval lies above 0.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import duckdb
import numpy as np
import pandas as pd

from models import metrics
from models.history import to_hours
from models.progress import EpochProgress
from models.ranking.pair_ranker import Ranker, train_ranker
from models.recdata import MART_COLUMNS, OPTIONAL_MART_COLUMNS, USER_ATTRIBUTES, RecData
from models.recommender import (
    FullStackModel,
    StackedFullStack,
    StackFit,
    StackSources,
    TwoTowerRecommender,
    fit_stacked_ranker,
)
from models.retrieval.baselines import (
    BPRRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RecencyPopularityRecommender,
    recency_popularity,
)
from models.retrieval.index import RetrievalIndex
from models.retrieval.two_tower import TwoTowerRetriever, train_profile_model
from models.settings import Settings

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["ndcg@10", "recall@20", "mrr@10", "hit@10", "coverage", "novelty", "diversity", "auc"]
TABLE_COLUMNS = [
    "model",
    "ndcg@10",
    "ndcg@10_std",
    "recall@20",
    "recall@20_std",
    "mrr@10",
    "hit@10",
    "coverage",
    "novelty",
    "diversity",
    "auc",
    "fit_seconds",
    "eval_seconds",
    "n_seeds",
    "delta_ndcg@10",
    "delta_ci_low",
    "delta_ci_high",
    "params",
]
BASELINE_NAMES = ("popularity", "recency_popularity", "itemknn", "ease", "bpr")
MODEL_NAMES = (*BASELINE_NAMES, "two_tower", "full_stack")


class RecModel(Protocol):
    """The surface every evaluated model offers."""

    name: str

    def fit(self, view: RecData) -> Any: ...

    def score(self, user_ids: list[str], item_ids: list[str]) -> np.ndarray: ...

    def recommend(self, user_ids: list[str], k: int, exclude_seen: bool = True) -> dict[str, list[str]]: ...


def observe(model: Any, view: RecData) -> Any:
    """Move a fitted model to ``view``'s cutoff without learning (``fit`` for models whose fit only indexes)."""
    return model.observe(view) if hasattr(model, "observe") else model.fit(view)


# --- reading the warehouse ---------------------------------------------------------------------------------
def read_marts(con: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
    """The six marts of the contract, with exactly the contract's columns, in a fixed row order.

    A table scan's row order is not fixed (parallel builds and scans), and the order reaches the sampling and
    batching of training: sorting makes the same marts and seed give the same models.
    """
    frames = {}
    for name, cols in MART_COLUMNS.items():
        stored = set(con.execute(f"select * from marts.{name} limit 0").df().columns)
        cols = cols + [c for c in OPTIONAL_MART_COLUMNS.get(name, []) if c in stored]
        frames[name] = con.execute(f"select {', '.join(cols)} from marts.{name} order by all").df()
    return frames


def read_item_embeddings(con: duckdb.DuckDBPyConnection) -> pd.DataFrame | None:
    """``ml.item_embeddings`` (None when the table does not exist yet)."""
    from models.data.warehouse import table_exists

    if not table_exists(con, "ml.item_embeddings"):
        return None
    return con.execute(
        "select item_id, content_hash, embedding, encoder_name, encoder_version from ml.item_embeddings "
        "order by item_id, content_hash"
    ).df()


def build_data(frames: Mapping[str, pd.DataFrame], embeddings: pd.DataFrame) -> RecData:
    """Marts + embeddings on one catalog index."""
    return RecData.from_frames(frames, embeddings)


# --- fitting the neural models (thin wrappers) ------------------------------------------------------------------
def fit_profile_model(settings: Settings, data: RecData) -> tuple[TwoTowerRetriever, pd.DataFrame]:
    """Train the two-tower profile model (train split, best epoch on valid); returns the model and epoch log."""
    return train_profile_model(data, settings)


def fit_ranker(settings: Settings, data: RecData, encoder: TwoTowerRetriever) -> tuple[Ranker, pd.DataFrame]:
    """Train the deep ranker on train-split samples with early stopping on valid; returns it and the epoch log."""
    return train_ranker(data, settings, encoder)


def build_retrieval(settings: Settings, data: RecData, encoder: TwoTowerRetriever) -> RetrievalIndex:
    """The retrieval index over ``data``'s whole catalog as of ``data.now`` (IVF above the ANN threshold)."""
    return RetrievalIndex(
        space=encoder.catalog_space(data.items, data.item_text),
        popularity=recency_popularity(data, settings.retrieval.popularity_half_life_days),
        published_hours=np.nan_to_num(to_hours(data.items["published_at"]), nan=-np.inf),
        ann_threshold_items=settings.retrieval.ann_threshold_items,
        ann_target_recall=settings.retrieval.ann_target_recall,
    )


def full_stack(
    settings: Settings, encoder: TwoTowerRetriever, ranker: Ranker, retrieval_weight: float
) -> FullStackModel:
    """An unfitted full stack with the settings' retrieval sizes and MMR weight."""
    return FullStackModel(
        encoder, ranker, settings.retrieval, settings.ranker.mmr_lambda, retrieval_weight,
        settings.profile.cold_start_interest_weight,
    )  # fmt: skip


def evaluation_users(data: RecData, split: str, max_users: int | None, seed: int) -> list[str]:
    """Users with at least one relevant item in ``split`` (a seeded sample of ``max_users`` when set)."""
    users = sorted(data.relevant(split))
    if max_users is not None and len(users) > max_users:
        rng = np.random.default_rng(seed)
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    return users


def split_ndcg(model: Any, data: RecData, split: str, users: Sequence[str], k: int = 10) -> float:
    """Mean full-ranking NDCG@k of ``model`` (as it stands) over ``users`` on ``split``."""
    relevant_idx = data.relevant(split)
    item_ids = data.items["item_id"].to_numpy()
    recs = model.recommend(list(users), k, exclude_seen=True)
    return metrics.mean_defined(
        metrics.ndcg_at_k(recs.get(u, []), set(item_ids[list(relevant_idx[u])].tolist()), k) for u in users
    )


def tune_retrieval_weight(
    settings: Settings, data: RecData, encoder: TwoTowerRetriever, ranker: Ranker
) -> tuple[float, pd.DataFrame]:
    """Weight of the two-tower logit in the final score, chosen on valid NDCG@10 (ties -> the smaller weight)."""
    grid = (
        settings.ranker.retrieval_weight_grid
        if settings.ranker.retrieval_weight is None
        else (settings.ranker.retrieval_weight,)
    )
    view = data.as_of(data.split_start("valid"))
    relevant = data.relevant("valid")
    users = evaluation_users(data, "valid", settings.evaluation.max_users, settings.seed)
    model = full_stack(settings, encoder, ranker, 0.0).fit(view)
    ranked = [c for s in range(0, len(users), 256) for c in model.rank_candidates(users[s : s + 256])]
    rows = []
    for weight in grid:
        lists = {u: model.finalize(c, 20, weight)[0] for u, c in zip(users, ranked, strict=True)}
        rows.append(
            {
                "retrieval_weight": weight,
                "valid_ndcg@10": metrics.mean_defined(
                    metrics.ndcg_at_k(lists[u], relevant[u], 10) for u in users
                ),
                "valid_recall@20": metrics.mean_defined(
                    metrics.recall_at_k(lists[u], relevant[u], 20) for u in users
                ),
            }
        )
    table = pd.DataFrame(rows)
    if table["valid_ndcg@10"].isna().all():
        return float(grid[0]), table
    best = table.sort_values(["valid_ndcg@10", "retrieval_weight"], ascending=[False, True]).iloc[0]
    return float(best["retrieval_weight"]), table


# --- model specifications ---------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    """How the protocol builds one model: ``make(params, seed)`` gives an unfitted model; ``grid`` holds the
    hyperparameter settings compared on valid (one = nothing to choose); ``seeded`` False for deterministic
    models (fitted once, the same figures for every seed)."""

    make: Callable[[Mapping[str, Any], int], Any]
    grid: Sequence[Mapping[str, Any]] = ({},)
    seeded: bool = True
    uses_tuned: bool = False  # receives the settings chosen so far as params["tuned"] (model -> params)


def baseline_specs(settings: Settings, data: RecData) -> dict[str, ModelSpec]:
    """Popularity, recency-weighted popularity, item-kNN, EASE and BPR with their valid grids."""
    ev = settings.evaluation
    valid_users = evaluation_users(data, "valid", ev.max_users, settings.seed)

    def bpr(params: Mapping[str, Any], seed: int) -> BPRRecommender:
        return BPRRecommender(
            dim=ev.bpr_dim, epochs=ev.bpr_epochs, lr=ev.bpr_learning_rate, weight_decay=ev.bpr_weight_decay,
            seed=seed, device=settings.resolved_device, patience=ev.bpr_patience,
            monitor=lambda model: split_ndcg(model, data, "valid", valid_users),
        )  # fmt: skip

    return {
        "popularity": ModelSpec(lambda p, s: PopularityRecommender(), seeded=False),
        "recency_popularity": ModelSpec(
            lambda p, s: RecencyPopularityRecommender(**p),
            [{"half_life_days": h} for h in ev.recency_half_life_grid],
            seeded=False,
        ),
        "itemknn": ModelSpec(
            lambda p, s: ItemKNNRecommender(**p),
            [
                {"n_neighbors": n, "shrinkage": sh}
                for n in ev.itemknn_neighbors_grid
                for sh in ev.itemknn_shrinkage_grid
            ],
            seeded=False,
        ),
        "ease": ModelSpec(
            lambda p, s: EASERecommender(**p), [{"l2": lam} for lam in ev.ease_l2_grid], seeded=False
        ),
        "bpr": ModelSpec(bpr),
    }


@dataclass
class NeuralModels:
    """The two-tower encoder and the ranker of one seed (the pair ranker, or the stacked ranker's fit), and the
    seconds their training took."""

    encoder: TwoTowerRetriever
    ranker: Ranker | None = None
    profile_seconds: float = 0.0
    ranker_seconds: float = 0.0
    stack: StackFit | None = None


SOURCE_MODELS = ("ease", "itemknn", "recency_popularity")  # the baselines the stacked full stack draws from


def tune_sources(settings: Settings, data: RecData) -> dict[str, Mapping[str, Any]]:
    """The stacked full stack's sources' hyperparameters, chosen on valid exactly as the protocol chooses the
    baselines' (the same grids and users, so the same values)."""
    specs = baseline_specs(settings, data)
    users = evaluation_users(data, "valid", settings.evaluation.max_users, settings.seed)
    return {name: tune_on_valid(name, specs[name], data, settings.seed, users)[1] for name in SOURCE_MODELS}


def stack_candidates(settings: Settings, with_two_tower: bool) -> dict[str, int]:
    """Candidates per source of the stacked full stack (settings.ranker.stack_candidates)."""
    n = dict(settings.ranker.stack_candidates)
    if not with_two_tower:
        n.pop("two_tower", None)
    return n


def fit_stack(
    settings: Settings, data: RecData, encoder: TwoTowerRetriever, tuned: Mapping[str, Mapping[str, Any]],
    seed: int,
) -> tuple[StackSources, dict[str, int], StackFit]:  # fmt: skip
    """The stacked ranker of one seed over sources with the ``tuned`` hyperparameters (time-based stacking on
    windows before valid, epochs and MMR chosen on valid: ``fit_stacked_ranker``)."""
    sources = StackSources.from_tuned(tuned, encoder, settings)
    n = stack_candidates(settings, encoder is not None)
    return sources, n, fit_stacked_ranker(data, sources, n, settings, seed=seed)


def neural_specs(
    settings: Settings, data: RecData, trained: Mapping[int, NeuralModels] | None = None
) -> dict[str, ModelSpec]:
    """two_tower and full_stack: per seed, the encoder (and ranker) of ``trained`` or, missing, trained here on
    train with that seed (best epochs on valid).

    With ``settings.ranker.kind == "stacked"`` (the default) the full stack is :class:`StackedFullStack`: the
    two-tower, EASE, item-kNN, popularity and recency-popularity candidates (the baselines' hyperparameters as
    chosen on valid) ranked by the stacked listwise ranker; with ``"pair"`` it is :class:`FullStackModel` (the
    two-tower retrieval and the pair ranker trained on impressions, retrieval weight chosen on valid).
    """
    cache: dict[int, NeuralModels] = dict(trained or {})
    stacked = settings.ranker.kind == "stacked"

    def models_for(seed: int) -> NeuralModels:
        if seed not in cache:
            seeded = settings.model_copy(update={"seed": seed})
            t0 = time.perf_counter()
            encoder, _ = fit_profile_model(seeded, data)
            t1 = time.perf_counter()
            ranker = None if stacked else fit_ranker(seeded, data, encoder)[0]
            cache[seed] = NeuralModels(encoder, ranker, t1 - t0, time.perf_counter() - t1)
        return cache[seed]

    def two_tower(params: Mapping[str, Any], seed: int) -> TwoTowerRecommender:
        neural = models_for(seed)
        model = TwoTowerRecommender(neural.encoder, settings.profile.cold_start_interest_weight)
        model.train_seconds = neural.profile_seconds  # type: ignore[attr-defined]
        return model

    def pair_stack(params: Mapping[str, Any], seed: int) -> FullStackModel:
        neural = models_for(seed)
        assert neural.ranker is not None
        weight, _ = tune_retrieval_weight(settings, data, neural.encoder, neural.ranker)
        model = full_stack(settings, neural.encoder, neural.ranker, weight)
        model.train_seconds = neural.profile_seconds + neural.ranker_seconds  # type: ignore[attr-defined]
        model.params = {"retrieval_weight": weight}  # type: ignore[attr-defined]
        return model

    def stacked_stack(params: Mapping[str, Any], seed: int) -> StackedFullStack:
        neural = models_for(seed)
        t0 = time.perf_counter()
        if neural.stack is None:
            sources, n, fit = fit_stack(settings, data, neural.encoder, params["tuned"], seed)
            neural.stack, neural.ranker_seconds = fit, time.perf_counter() - t0
        else:
            sources = StackSources.from_tuned(params["tuned"], neural.encoder, settings)
            n = stack_candidates(settings, True)
        fit = neural.stack
        model = StackedFullStack(sources, n, fit.ranker, fit.mmr_lambda, neural.encoder)
        model.train_seconds = neural.profile_seconds + neural.ranker_seconds  # type: ignore[attr-defined]
        model.params = {"mmr_lambda": fit.mmr_lambda, "stack_epochs": fit.epochs}  # type: ignore[attr-defined]
        return model

    stack_spec = ModelSpec(stacked_stack, uses_tuned=True) if stacked else ModelSpec(pair_stack)
    return {"two_tower": ModelSpec(two_tower), "full_stack": stack_spec}


# --- evaluation of fitted models --------------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """One row per model, per-user and per-group figures, the recommendations themselves and timings."""

    table: pd.DataFrame
    groups: pd.DataFrame
    recommendations: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    split: str = "test"
    per_user: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparison: dict[str, Any] = field(default_factory=dict)
    tuning: pd.DataFrame = field(default_factory=pd.DataFrame)


def _impression_auc(model: Any, samples: pd.DataFrame) -> float:
    if samples.empty or samples["label"].nunique() < 2:
        return float("nan")
    scores = model.score(samples["user_id"].tolist(), samples["item_id"].tolist())
    keep = ~np.isnan(scores)
    return metrics.auc(samples["label"].to_numpy()[keep], scores[keep])


def evaluate_models(
    settings: Settings, data: RecData, models: Mapping[str, RecModel], split: str = "test"
) -> EvaluationResult:
    """Full-ranking metrics of ``models`` as they stand (fitted / observed at ``split``'s start) on ``split``."""
    k_max = max(20, *settings.evaluation.k_values)
    view = data.as_of(data.split_start(split))
    relevant_idx = data.relevant(split)
    users = evaluation_users(data, split, settings.evaluation.max_users, settings.seed)
    item_ids = data.items["item_id"].to_numpy()
    relevant = {u: set(item_ids[list(relevant_idx[u])].tolist()) for u in users}
    popularity = dict(zip(item_ids, view.item_popularity(), strict=True))
    norm_text = data.item_text / np.clip(np.linalg.norm(data.item_text, axis=1, keepdims=True), 1e-12, None)
    embeddings = dict(zip(item_ids, norm_text, strict=True))
    item_group = dict(zip(item_ids, data.items["creator_group"].fillna("unknown"), strict=True))
    user_rows = data.users.set_index("user_id")
    samples = data.samples[data.samples["split"] == split]
    rows, group_frames, rec_frames, user_frames, timings = [], [], [], [], {}
    for name, model in models.items():
        t0 = time.perf_counter()
        recs = model.recommend(users, k_max, exclude_seen=True)
        elapsed = time.perf_counter() - t0
        timings[f"{name}_users_per_s"] = len(users) / elapsed if elapsed > 0 else float("nan")
        per_user = pd.DataFrame(
            [
                {
                    "user_id": u,
                    **metrics.ranking_metrics(recs.get(u, []), relevant[u], settings.evaluation.k_values),
                }
                for u in users
            ]
        )
        top10 = [recs.get(u, [])[:10] for u in users]
        row: dict[str, Any] = {"model": name}
        for column in ("ndcg@10", "recall@20", "mrr@10", "hit@10"):
            row[column] = metrics.mean_defined(per_user[column]) if len(per_user) else float("nan")
        t1 = time.perf_counter()
        row.update(
            {
                "coverage": metrics.catalog_coverage(top10, data.n_items),
                "novelty": metrics.novelty(top10, popularity, data.n_items),
                "diversity": metrics.intra_list_diversity(top10, embeddings),
                "auc": _impression_auc(model, samples),
                "eval_seconds": elapsed + time.perf_counter() - t1,
            }
        )
        rows.append(row)
        if len(per_user):
            user_frames.append(per_user[["user_id", "ndcg@10", "recall@20"]].assign(model=name))
            dims = [d for d in USER_ATTRIBUTES if d in user_rows.columns and user_rows[d].notna().any()]
            for dim in dims:
                per_user[dim] = per_user["user_id"].map(user_rows[dim])
            for dim in dims:
                g = metrics.grouped_means(per_user, dim, ["ndcg@10", "recall@20", "hit@10"])
                group_frames.append(g.assign(model=name, dimension=dim))
        exposure = metrics.exposure_by_group({u: recs.get(u, []) for u in users}, relevant, item_group, 10)
        group_frames.append(exposure.assign(model=name, dimension="creator_group"))
        rec_frames.append(
            pd.DataFrame(
                [
                    {
                        "model": name,
                        "split": split,
                        "user_id": u,
                        "rank": r + 1,
                        "item_id": i,
                        "relevant": i in relevant[u],
                    }
                    for u in users
                    for r, i in enumerate(recs.get(u, []))
                ]
            )
        )
    groups = pd.concat(group_frames, ignore_index=True) if group_frames else pd.DataFrame()
    if len(groups):
        lead = ["model", "dimension", "group"]
        groups = groups[lead + [c for c in groups.columns if c not in lead]]
    table = pd.DataFrame(rows).reindex(columns=["model", *METRIC_COLUMNS, "eval_seconds"])
    return EvaluationResult(
        table=table,
        groups=groups,
        recommendations=pd.concat(rec_frames, ignore_index=True) if rec_frames else pd.DataFrame(),
        timings=timings | {"n_users": float(len(users))},
        split=split,
        per_user=pd.concat(user_frames, ignore_index=True) if user_frames else pd.DataFrame(),
    )


# --- the protocol ---------------------------------------------------------------------------------------------
def _fit_seconds(model: Any, seconds: float) -> float:
    return seconds + float(getattr(model, "train_seconds", 0.0))


def tune_on_valid(
    name: str, spec: ModelSpec, data: RecData, seed: int, users: Sequence[str]
) -> tuple[Any, Mapping[str, Any], float, pd.DataFrame]:
    """Fit ``spec`` on the train view for each grid setting; the best on valid NDCG@10 (ties: the first).

    Returns the best model (fitted on train), its settings, its fit seconds, and the grid's valid table.
    """
    train_view = data.as_of(data.split_start("valid"))
    best: tuple[Any, Mapping[str, Any], float] | None = None
    best_ndcg, rows = -np.inf, []
    progress = EpochProgress(f"{name} valid grid", total=len(spec.grid), log=log, unit="setting")
    with progress:
        for params in spec.grid:
            t0 = time.perf_counter()
            model = spec.make(params, seed)
            model.fit(train_view)
            seconds = _fit_seconds(model, time.perf_counter() - t0)
            chosen = {**params, **getattr(model, "params", {})}
            if getattr(model, "best_epoch", 0):
                chosen["epochs"] = model.best_epoch
            ndcg = split_ndcg(model, data, "valid", users) if len(spec.grid) > 1 else float("nan")
            rows.append({"model": name, "params": json.dumps(chosen), "valid_ndcg@10": ndcg})
            progress.step(params=json.dumps(chosen), valid_ndcg_at_10=ndcg)
            if best is None or ndcg > best_ndcg:
                best, best_ndcg = (model, chosen, seconds), ndcg
    assert best is not None
    return (*best, pd.DataFrame(rows))


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of a - b over paired units and the percentile bootstrap interval of that mean (resampling units)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(diff) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2**22 // len(diff))
    for s in range(0, samples, chunk):
        n = min(chunk, samples - s)
        means[s : s + n] = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(diff.mean()), float(low), float(high)


def compare_to_best_baseline(
    table: pd.DataFrame, per_user: pd.DataFrame, samples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Paired bootstrap over test users of NDCG@10 full_stack minus the best baseline (by mean NDCG@10)."""
    baselines = table[table["model"].isin(BASELINE_NAMES)]
    if "full_stack" not in set(table["model"]) or baselines.empty:
        return {}
    best = str(baselines.sort_values("ndcg@10", ascending=False).iloc[0]["model"])
    # each user's NDCG@10 averaged over the seeds; users without a defined NDCG are left out
    user_means = per_user.groupby(["model", "user_id"])["ndcg@10"].mean().unstack("model")
    pair = user_means[["full_stack", best]].dropna()
    delta, low, high = paired_bootstrap(
        pair["full_stack"].to_numpy(), pair[best].to_numpy(), samples=samples, seed=seed
    )
    return {
        "best_baseline": best,
        "delta_ndcg@10": delta,
        "delta_ci_low": low,
        "delta_ci_high": high,
        "n_users": int(len(pair)),
        "bootstrap_samples": samples,
        "ratio_ndcg@10": float(pair["full_stack"].mean() / pair[best].mean())
        if pair[best].mean()
        else float("nan"),
    }


def _aggregate(per_seed: pd.DataFrame, params: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Mean over seeds per model (in first-seen order), std for NDCG@10 and Recall@20, seconds per seed."""
    order = list(dict.fromkeys(per_seed["model"]))
    grouped = per_seed.groupby("model", sort=False)
    table = grouped[[*METRIC_COLUMNS, "fit_seconds", "eval_seconds"]].mean().reindex(order)
    for column in ("ndcg@10", "recall@20"):
        table[f"{column}_std"] = grouped[column].std(ddof=1).reindex(order).fillna(0.0)
    table["n_seeds"] = grouped.size().reindex(order)
    table["params"] = [json.dumps(params.get(m, {})) for m in order]
    return table.reset_index()


def run_protocol(
    settings: Settings,
    data: RecData,
    specs: Mapping[str, ModelSpec],
    split: str = "test",
    seeds: Sequence[int] | None = None,
) -> tuple[EvaluationResult, EvaluationResult]:
    """The protocol of the module docstring for every spec: (valid result of the first seed, test result).

    The test result's table has one row per model with TABLE_COLUMNS; its ``per_user`` holds every seed's
    per-user figures; ``comparison`` the bootstrap of full_stack against the best baseline.
    """
    seeds = list(seeds if seeds is not None else settings.evaluation.seeds)
    valid_users = evaluation_users(data, "valid", settings.evaluation.max_users, settings.seed)
    train_view = data.as_of(data.split_start("valid"))
    test_view = data.as_of(data.split_start(split))
    per_seed_rows, user_frames, tuning_frames = [], [], []
    valid_results: list[EvaluationResult] = []
    first_results: list[EvaluationResult] = []
    chosen: dict[str, Mapping[str, Any]] = {}
    run = EpochProgress("evaluation", total=len(specs) * len(seeds), log=log, unit="model-seed")
    with run:
        for name, spec in specs.items():
            if spec.uses_tuned:
                tuned = {m: dict(p) for m, p in chosen.items()}
                spec = replace(spec, grid=[{**g, "tuned": tuned} for g in spec.grid])
            model, params, seconds, tuning = tune_on_valid(name, spec, data, seeds[0], valid_users)
            chosen[name] = params
            tuning_frames.append(tuning)
            # valid figures of the train-fitted model, before it moves to the test cutoff
            valid_results.append(evaluate_models(settings, data, {name: model}, "valid"))
            tested: EvaluationResult | None = None
            for i, seed in enumerate(seeds):
                if i > 0 and spec.seeded:
                    t0 = time.perf_counter()
                    model = spec.make(params, seed)
                    model.fit(train_view)
                    seconds = _fit_seconds(model, time.perf_counter() - t0)
                if tested is None or spec.seeded:
                    tested = evaluate_models(settings, data, {name: observe(model, test_view)}, split)
                if i == 0:
                    first_results.append(tested)
                row = tested.table.iloc[0].to_dict() | {"seed": seed, "fit_seconds": seconds}
                per_seed_rows.append(row)
                user_frames.append(tested.per_user.assign(seed=seed))
                run.step(model=name, seed=seed, ndcg_at_10=row["ndcg@10"], fit_s=round(seconds, 1))
    per_seed = pd.DataFrame(per_seed_rows)
    per_user = pd.concat(user_frames, ignore_index=True) if user_frames else pd.DataFrame()
    table = _aggregate(per_seed, chosen)
    comparison = compare_to_best_baseline(
        table, per_user, settings.evaluation.bootstrap_samples, settings.seed
    )
    for key in ("delta_ndcg@10", "delta_ci_low", "delta_ci_high"):
        table[key] = np.where(table["model"] == "full_stack", comparison.get(key, np.nan), np.nan)
    first = _merge_all(first_results, split)
    test = EvaluationResult(
        table=table.reindex(columns=TABLE_COLUMNS),
        groups=first.groups,
        recommendations=first.recommendations,
        timings=first.timings,
        split=split,
        per_user=per_user,
        comparison=comparison,
        tuning=pd.concat(tuning_frames, ignore_index=True),
    )
    return _merge_all(valid_results, "valid"), test


def _merge_all(results: Sequence[EvaluationResult], split: str) -> EvaluationResult:
    """One result from per-model results of the same split (tables, groups and recommendations stacked)."""

    def cat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    timings: dict[str, float] = {}
    for r in results:
        timings |= r.timings
    return EvaluationResult(
        table=cat([r.table for r in results]),
        groups=cat([r.groups for r in results]),
        recommendations=cat([r.recommendations for r in results]),
        timings=timings,
        split=split,
        per_user=cat([r.per_user for r in results]),
    )


def all_specs(
    settings: Settings, data: RecData, trained: Mapping[int, NeuralModels] | None = None
) -> dict[str, ModelSpec]:
    """Every evaluated model: the baselines, two_tower and full_stack (MODEL_NAMES order)."""
    return {**baseline_specs(settings, data), **neural_specs(settings, data, trained)}


def evaluate_all(
    settings: Settings,
    data: RecData,
    encoder: TwoTowerRetriever,
    ranker: Ranker,
    seeds: Sequence[int] | None = None,
) -> EvaluationResult:
    """The protocol over every model; ``encoder`` / ``ranker`` serve the first seed, other seeds train anew."""
    seeds = list(seeds if seeds is not None else settings.evaluation.seeds)
    trained = {seeds[0]: NeuralModels(encoder, ranker)}
    return run_protocol(settings, data, all_specs(settings, data, trained), seeds=seeds)[1]


# --- thin wrappers kept for the assets, benchmarks and tests ------------------------------------------------
def fit_baselines(settings: Settings, view: RecData) -> dict[str, Any]:
    """Every baseline with its default settings (grid-free; the protocol tunes them), fitted on ``view``."""
    ev = settings.evaluation
    models: dict[str, Any] = {
        "popularity": PopularityRecommender(),
        "recency_popularity": RecencyPopularityRecommender(settings.retrieval.popularity_half_life_days),
        "itemknn": ItemKNNRecommender(ev.itemknn_neighbors),
        "ease": EASERecommender(ev.ease_l2_grid[len(ev.ease_l2_grid) // 2]),
        "bpr": BPRRecommender(
            dim=ev.bpr_dim, epochs=ev.bpr_epochs, lr=ev.bpr_learning_rate, weight_decay=ev.bpr_weight_decay,
            seed=settings.seed, device=settings.resolved_device,
        ),
    }  # fmt: skip
    for model in models.values():
        model.fit(view)
    return models


def build_models(
    settings: Settings, view: RecData, encoder: TwoTowerRetriever, ranker: Ranker, retrieval_weight: float
) -> dict[str, Any]:
    """Every evaluated model with default settings, fitted/indexed on ``view`` (one seed, no tuning)."""
    models = fit_baselines(settings, view)
    models["two_tower"] = TwoTowerRecommender(encoder, settings.profile.cold_start_interest_weight).fit(view)
    models["full_stack"] = full_stack(settings, encoder, ranker, retrieval_weight).fit(view)
    return models


def run_evaluation(
    settings: Settings,
    data: RecData,
    encoder: TwoTowerRetriever,
    ranker: Ranker,
    retrieval_weight: float,
    split: str = "test",
) -> EvaluationResult:
    """One seed, default settings: every model fitted/indexed on the history before ``split``, evaluated on it."""
    view = data.as_of(data.split_start(split))
    return evaluate_models(
        settings, data, build_models(settings, view, encoder, ranker, retrieval_weight), split
    )


# --- reports ---------------------------------------------------------------------------------------------------
def write_report(table: pd.DataFrame, reports_dir: Path, name: str = "evaluation.csv") -> Path:
    """Write the evaluation table as CSV under ``reports_dir``."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / name
    table.to_csv(path, index=False)
    return path


def plot_evaluation(table: pd.DataFrame, path: Path, title: str = "Test split") -> Path:
    """NDCG@10 and Recall@20 per model with error bars (std over seeds) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(table) + 1.8), sharey=True)
    ypos = np.arange(len(table))
    for ax, column in zip(axes, ("ndcg@10", "recall@20"), strict=True):
        colors = ["tab:orange" if m == "full_stack" else "tab:blue" for m in table["model"]]
        ax.barh(ypos, table[column], xerr=table.get(f"{column}_std"), color=colors, capsize=3)
        ax.set_yticks(ypos, table["model"])
        ax.set_xlabel(f"{column} (mean +/- std over seeds)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_baseline(table: pd.DataFrame, metric: str = "ndcg@10") -> tuple[str, float]:
    """The strongest baseline on ``metric`` (name, value)."""
    base = table[table["model"].isin(BASELINE_NAMES)]
    row = base.sort_values(metric, ascending=False).iloc[0]
    return str(row["model"]), float(row[metric])


Verdict = Literal["win", "tie", "loss"]


def full_stack_verdict(table: pd.DataFrame) -> tuple[Verdict, str]:
    """The paired 95% interval of NDCG@10 full_stack minus the best baseline: above 0 ``win``, below 0 ``loss``,
    containing 0 ``tie`` (no difference the test users can show), with the numbers as a message.

    The message also compares Recall@20 (reported, not gated).
    """
    full = table.set_index("model").loc["full_stack"]
    name, value = best_baseline(table, "ndcg@10")
    low = full.get("delta_ci_low", np.nan)
    high = full.get("delta_ci_high", np.nan)
    verdict: Verdict
    if np.isfinite(low) and low > 0:
        verdict = "win"
    elif np.isfinite(high) and high < 0:
        verdict = "loss"
    else:
        verdict = "tie"
    parts = [
        f"ndcg@10: full_stack {full['ndcg@10']:.4f} vs best baseline {name} {value:.4f}, difference "
        f"{full['ndcg@10'] - value:+.4f} (paired 95% interval {low:+.4f} .. {high:+.4f}: {verdict.upper()})"
    ]
    r_name, r_value = best_baseline(table, "recall@20")
    parts.append(
        f"recall@20: full_stack {full['recall@20']:.4f} vs best baseline {r_name} {r_value:.4f} "
        f"({'ahead' if full['recall@20'] > r_value else 'behind'})"
    )
    return verdict, "; ".join(parts)


def full_stack_wins(table: pd.DataFrame) -> tuple[bool, str]:
    """Whether the paired 95% interval of NDCG@10 full_stack minus the best baseline lies above 0."""
    verdict, message = full_stack_verdict(table)
    return verdict == "win", message


def may_promote(verdict: Verdict, has_champion: bool) -> bool:
    """The champion policy: a win promotes; a tie only makes a first champion (an empty registry, so the
    reports, copy and service have a model), never replaces one; a loss never promotes."""
    return verdict == "win" or (verdict == "tie" and not has_champion)


@dataclass
class PipelineResult:
    """Everything one end-to-end training run produced."""

    encoder: TwoTowerRetriever
    ranker: Ranker | None
    retrieval_weight: float
    profile_log: pd.DataFrame
    ranker_log: pd.DataFrame
    weight_grid: pd.DataFrame
    valid: EvaluationResult
    test: EvaluationResult
    seconds: dict[str, float]


def train_and_evaluate(
    settings: Settings, data: RecData, seeds: Sequence[int] | None = None
) -> PipelineResult:
    """The whole ML pipeline in one call (benchmarks, tests): neural models, then the protocol over all."""
    seeds = list(seeds if seeds is not None else settings.evaluation.seeds)
    seconds: dict[str, float] = {}
    seeded = settings.model_copy(update={"seed": seeds[0]})
    t = time.perf_counter()
    encoder, profile_log = fit_profile_model(seeded, data)
    seconds["profile_model"] = time.perf_counter() - t
    ranker, ranker_log, weight, grid, stack = None, pd.DataFrame(), 0.0, pd.DataFrame(), None
    t = time.perf_counter()
    if settings.ranker.kind == "pair":
        ranker, ranker_log = fit_ranker(seeded, data, encoder)
        seconds["ranker"] = time.perf_counter() - t
        t = time.perf_counter()
        weight, grid = tune_retrieval_weight(settings, data, encoder, ranker)
        seconds["tuning"] = time.perf_counter() - t
    else:
        _, _, stack = fit_stack(seeded, data, encoder, tune_sources(settings, data), seeds[0])
        ranker_log, grid = stack.log, stack.mmr_table
        seconds["ranker"] = time.perf_counter() - t
    t = time.perf_counter()
    trained = {seeds[0]: NeuralModels(encoder, ranker, seconds["profile_model"], seconds["ranker"], stack)}
    valid, test = run_protocol(settings, data, all_specs(settings, data, trained), seeds=seeds)
    seconds["evaluation"] = time.perf_counter() - t
    return PipelineResult(encoder, ranker, weight, profile_log, ranker_log, grid, valid, test, seconds)
