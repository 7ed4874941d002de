"""Train-and-evaluate functions the Dagster assets call: settings + mart DataFrames in, models and tables out.

Protocol (the same for every model):
- The profile model and the ranker learn from the TRAIN split; their early stopping and the full stack's
  retrieval weight are chosen on VALID (history = everything before valid).
- Baselines have no early stopping; for a split they are fitted on everything before it.
- TEST metrics rank the whole catalog for every user with at least one new engagement in the test window,
  with history = everything before test (train + valid). Items the user engaged with before the window, and
  items not yet published at its start, are never recommended (by any model) and never count as relevant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd

from models import metrics
from models.baselines import BPRRecommender, ItemKNNRecommender, PopularityRecommender
from models.history import to_hours
from models.ranking import Ranker, train_ranker
from models.recdata import MART_COLUMNS, RecData
from models.recommender import FullStackModel, TwoTowerRecommender, recency_popularity
from models.retrieval import RetrievalIndex
from models.settings import Settings
from models.two_tower import TwoTowerRetriever, train_profile_model

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "model",
    "ndcg@10",
    "recall@20",
    "mrr@10",
    "hit@10",
    "coverage",
    "novelty",
    "diversity",
    "auc",
]
BASELINE_NAMES = ("popularity", "itemknn", "bpr")
MODEL_NAMES = (*BASELINE_NAMES, "two_tower", "full_stack")


class RecModel(Protocol):
    """The surface every evaluated model offers."""

    name: str

    def fit(self, view: RecData) -> Any: ...

    def score(self, user_ids: list[str], item_ids: list[str]) -> np.ndarray: ...

    def recommend(self, user_ids: list[str], k: int, exclude_seen: bool = True) -> dict[str, list[str]]: ...


# --- reading the warehouse ---------------------------------------------------------------------------------
def read_marts(con: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
    """The six marts of the contract, with exactly the contract's columns, in a fixed row order.

    A table scan's row order is not fixed (parallel builds and scans), and the order reaches the sampling and
    batching of training: sorting makes the same marts and seed give the same models.
    """
    return {
        name: con.execute(f"select {', '.join(cols)} from marts.{name} order by all").df()
        for name, cols in MART_COLUMNS.items()
    }


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


# --- fitting --------------------------------------------------------------------------------------------------
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
    )


def fit_baselines(settings: Settings, view: RecData) -> dict[str, Any]:
    """Popularity, item-kNN and BPR fitted on ``view``."""
    ev = settings.evaluation
    models: dict[str, Any] = {
        "popularity": PopularityRecommender(),
        "itemknn": ItemKNNRecommender(ev.itemknn_neighbors),
        "bpr": BPRRecommender(
            dim=ev.bpr_dim, epochs=ev.bpr_epochs, lr=ev.bpr_learning_rate, weight_decay=ev.bpr_weight_decay,
            seed=settings.seed, device=settings.resolved_device,
        ),
    }  # fmt: skip
    for model in models.values():
        model.fit(view)
    return models


def full_stack(
    settings: Settings, encoder: TwoTowerRetriever, ranker: Ranker, retrieval_weight: float
) -> FullStackModel:
    """An unfitted full stack with the settings' retrieval sizes and MMR weight."""
    return FullStackModel(
        encoder, ranker, settings.retrieval, settings.ranker.mmr_lambda, retrieval_weight,
        settings.profile.cold_start_interest_weight,
    )  # fmt: skip


def build_models(
    settings: Settings, view: RecData, encoder: TwoTowerRetriever, ranker: Ranker, retrieval_weight: float
) -> dict[str, Any]:
    """Every evaluated model, fitted/indexed on ``view``: baselines, two_tower and full_stack."""
    models = fit_baselines(settings, view)
    models["two_tower"] = TwoTowerRecommender(encoder, settings.profile.cold_start_interest_weight).fit(view)
    models["full_stack"] = full_stack(settings, encoder, ranker, retrieval_weight).fit(view)
    return models


def evaluation_users(data: RecData, split: str, max_users: int | None, seed: int) -> list[str]:
    """Users with at least one relevant item in ``split`` (a seeded sample of ``max_users`` when set)."""
    users = sorted(data.relevant(split))
    if max_users is not None and len(users) > max_users:
        rng = np.random.default_rng(seed)
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    return users


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


# --- evaluation -----------------------------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """One row per model, per-group figures, the recommendations themselves and timings."""

    table: pd.DataFrame
    groups: pd.DataFrame
    recommendations: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    split: str = "test"


def _impression_auc(model: Any, samples: pd.DataFrame) -> float:
    if samples.empty or samples["label"].nunique() < 2:
        return float("nan")
    scores = model.score(samples["user_id"].tolist(), samples["item_id"].tolist())
    keep = ~np.isnan(scores)
    return metrics.auc(samples["label"].to_numpy()[keep], scores[keep])


def evaluate_models(
    settings: Settings, data: RecData, models: Mapping[str, RecModel], split: str = "test"
) -> EvaluationResult:
    """Full-ranking metrics of already fitted ``models`` on ``split`` (see the module docstring for the protocol)."""
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
    rows, group_frames, rec_frames, timings = [], [], [], {}
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
        rows.append(
            {
                "model": name,
                "ndcg@10": metrics.mean_defined(per_user["ndcg@10"]) if len(per_user) else float("nan"),
                "recall@20": metrics.mean_defined(per_user["recall@20"]) if len(per_user) else float("nan"),
                "mrr@10": metrics.mean_defined(per_user["mrr@10"]) if len(per_user) else float("nan"),
                "hit@10": metrics.mean_defined(per_user["hit@10"]) if len(per_user) else float("nan"),
                "coverage": metrics.catalog_coverage(top10, data.n_items),
                "novelty": metrics.novelty(top10, popularity, data.n_items),
                "diversity": metrics.intra_list_diversity(top10, embeddings),
                "auc": _impression_auc(model, samples),
            }
        )
        if len(per_user):
            per_user["user_group"] = per_user["user_id"].map(user_rows["user_group"])
            per_user["region"] = per_user["user_id"].map(user_rows["region"])
            for dim in ("user_group", "region"):
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
    return EvaluationResult(
        table=pd.DataFrame(rows, columns=TABLE_COLUMNS),
        groups=groups,
        recommendations=pd.concat(rec_frames, ignore_index=True) if rec_frames else pd.DataFrame(),
        timings=timings | {"n_users": float(len(users))},
        split=split,
    )


def run_evaluation(
    settings: Settings,
    data: RecData,
    encoder: TwoTowerRetriever,
    ranker: Ranker,
    retrieval_weight: float,
    split: str = "test",
) -> EvaluationResult:
    """Fit/index every model on the history before ``split`` and evaluate them on it."""
    view = data.as_of(data.split_start(split))
    return evaluate_models(
        settings, data, build_models(settings, view, encoder, ranker, retrieval_weight), split
    )


def evaluate_all(
    settings: Settings,
    data: RecData,
    encoder: TwoTowerRetriever,
    ranker: Ranker,
    retrieval_weight: float | None = None,
    split: str = "test",
) -> pd.DataFrame:
    """One row per model (popularity, itemknn, bpr, two_tower, full_stack) with the TABLE_COLUMNS metrics."""
    if retrieval_weight is None:
        retrieval_weight, _ = tune_retrieval_weight(settings, data, encoder, ranker)
    return run_evaluation(settings, data, encoder, ranker, retrieval_weight, split).table


def write_report(table: pd.DataFrame, reports_dir: Path, name: str = "evaluation.csv") -> Path:
    """Write the evaluation table as CSV under ``reports_dir``."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / name
    table.to_csv(path, index=False)
    return path


def best_baseline(table: pd.DataFrame, metric: str = "ndcg@10") -> tuple[str, float]:
    """The strongest baseline on ``metric`` (name, value)."""
    base = table[table["model"].isin(BASELINE_NAMES)]
    row = base.sort_values(metric, ascending=False).iloc[0]
    return str(row["model"]), float(row[metric])


def full_stack_wins(
    table: pd.DataFrame, metrics_to_check: tuple[str, ...] = ("ndcg@10", "recall@20")
) -> tuple[bool, str]:
    """Whether the full stack beats every baseline on each metric, with the numbers as a message."""
    full = table.set_index("model").loc["full_stack"]
    parts, ok = [], True
    for metric in metrics_to_check:
        name, value = best_baseline(table, metric)
        won = bool(full[metric] > value)
        ok &= won
        parts.append(
            f"{metric}: full_stack {full[metric]:.4f} vs best baseline {name} {value:.4f} ({'win' if won else 'LOSS'})"
        )
    return ok, "; ".join(parts)


@dataclass
class PipelineResult:
    """Everything one end-to-end training run produced."""

    encoder: TwoTowerRetriever
    ranker: Ranker
    retrieval_weight: float
    profile_log: pd.DataFrame
    ranker_log: pd.DataFrame
    weight_grid: pd.DataFrame
    valid: EvaluationResult
    test: EvaluationResult
    seconds: dict[str, float]


def train_and_evaluate(settings: Settings, data: RecData) -> PipelineResult:
    """The whole ML pipeline in one call (benchmarks, tests): profile model, ranker, tuning, valid and test tables."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    encoder, profile_log = fit_profile_model(settings, data)
    seconds["profile_model"] = time.perf_counter() - t
    t = time.perf_counter()
    ranker, ranker_log = fit_ranker(settings, data, encoder)
    seconds["ranker"] = time.perf_counter() - t
    t = time.perf_counter()
    weight, grid = tune_retrieval_weight(settings, data, encoder, ranker)
    seconds["tuning"] = time.perf_counter() - t
    t = time.perf_counter()
    valid = run_evaluation(settings, data, encoder, ranker, weight, "valid")
    test = run_evaluation(settings, data, encoder, ranker, weight, "test")
    seconds["evaluation"] = time.perf_counter() - t
    return PipelineResult(encoder, ranker, weight, profile_log, ranker_log, grid, valid, test, seconds)
