"""The stacked full stack against tuned baselines on a built warehouse (e.g. ml-100k with the share split).

Reads the marts and item embeddings from a DuckDB file the pipeline built (ingest + dbt + ``item_embeddings``),
so the data are exactly the pipeline's. Protocol, the same for every model and the pipeline's
(``models/evaluation.py``, no refit):
- every model learns on TRAIN (the view as of the valid start) and its hyperparameters are chosen on VALID;
- at test it only ``observe``s the view as of the test start (histories and point-in-time counts move, no
  weight changes) and is scored on the test window. The test window is never used for a choice.
The full stack's sources are fitted on train and observed at test the same way; its ranker is trained by
time-based stacking on windows before valid (features as of each window's start, labels from the window),
its epochs and MMR weight chosen on valid, and it is not refitted with valid's labels. Prints mean +/- std over seeds, wall times, the ratio of
the full stack to the best baseline and a paired bootstrap 95% interval over test users of the difference.

    RECGEN_TORCH_THREADS=1 .venv/bin/python -m benchmarks.full_stack --duckdb data/recgen.duckdb --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import torch

from models import metrics
from models.evaluation import read_item_embeddings, read_marts
from models.recdata import RecData
from models.recommender import StackedFullStack, TwoTowerRecommender, fit_stacked_ranker, stacking_lists
from models.retrieval.baselines import EASERecommender, ItemKNNRecommender, PopularityRecommender
from models.retrieval.candidates import FreshPopularity
from models.retrieval.index import mask_seen
from models.settings import Settings

EASE_GRID = (50.0, 100.0, 200.0, 500.0, 1000.0)
KNN_GRID = (20, 50, 100, 200)
FRESH_GRID = (1.0, 3.0, 7.0, 14.0, 30.0, 90.0)


def load(path: Path) -> RecData:
    """RecData from a built warehouse (read-only)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        frames, emb = read_marts(con), read_item_embeddings(con)
    finally:
        con.close()
    return RecData.from_frames(frames, emb)


def top_positions(model: object, view: RecData, users: list[str], k: int = 20) -> dict[str, np.ndarray]:
    """Top-k catalog positions of a full-catalog scorer after the view's exclusions."""
    if isinstance(model, StackedFullStack):
        return model.ranked_positions(users, k)
    out = {}
    for s in range(0, len(users), 512):
        batch = users[s : s + 512]
        scores = mask_seen(model.score_all(batch).float().clone(), view.exclusions(batch))
        top = torch.topk(scores, k, dim=1).indices.numpy()
        out.update(dict(zip(batch, top, strict=True)))
    return out


def per_user_ndcg(
    ranked: dict[str, np.ndarray], relevant: dict[str, set[int]], users: list[str], k: int = 10
) -> np.ndarray:
    """NDCG@k of each user, in ``users`` order."""
    return np.asarray([metrics.ndcg_at_k(ranked[u].tolist(), relevant[u], k) for u in users], dtype=float)


def per_user_recall(
    ranked: dict[str, np.ndarray], relevant: dict[str, set[int]], users: list[str], k: int = 20
) -> np.ndarray:
    """Recall@k of each user."""
    return np.asarray([metrics.recall_at_k(ranked[u].tolist(), relevant[u], k) for u in users], dtype=float)


def tune(
    name: str, make: Callable[[object], object], grid: tuple, data: RecData
) -> tuple[object, pd.DataFrame]:
    """The grid value with the best valid NDCG@10 (fitted before valid)."""
    view = data.as_of(data.split_start("valid"))
    relevant = data.relevant("valid")
    users = sorted(relevant)
    rows = []
    for value in grid:
        model = make(value).fit(view)
        rows.append(
            {
                "model": name,
                "value": value,
                "valid_ndcg@10": per_user_ndcg(top_positions(model, view, users), relevant, users).mean(),
            }
        )
    table = pd.DataFrame(rows)
    return table.loc[table["valid_ndcg@10"].idxmax(), "value"], table


def bootstrap(diff: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap 95% interval of the mean of per-user differences."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duckdb", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--two-tower", action="store_true", help="add the two-tower retriever as a source")
    parser.add_argument(
        "--candidates",
        type=int,
        nargs=4,
        default=[200, 100, 50, 200],
        metavar=("EASE", "KNN", "POP", "FRESH"),
        help="candidates per source (two-tower: the same as item-kNN)",
    )
    parser.add_argument(
        "--recent-days", type=float, default=0, help="add EASE on the last N days as a source"
    )
    parser.add_argument("--csv", type=Path, default=None, help="write the table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    torch.set_num_threads(settings.torch_threads or 1)
    t0 = time.perf_counter()
    data = load(args.duckdb)
    print(
        f"loaded {data.n_items} items, {len(data.histories)} engagements in {time.perf_counter() - t0:.1f}s"
    )
    print(data.boundaries.to_string(index=False))
    test_view = data.as_of(data.split_start("test"))
    relevant = data.relevant("test")
    users = sorted(relevant)
    print(f"test users {len(users)}, valid users {len(data.relevant('valid'))}")

    t = time.perf_counter()
    l2, ease_table = tune("ease", lambda v: EASERecommender(float(v)), EASE_GRID, data)
    knn, knn_table = tune("itemknn", lambda v: ItemKNNRecommender(int(v)), KNN_GRID, data)
    half_life, fresh_table = tune("fresh", lambda v: FreshPopularity(float(v)), FRESH_GRID, data)
    tuning_seconds = time.perf_counter() - t
    print(pd.concat([ease_table, knn_table, fresh_table]).to_string(index=False))
    print(f"tuning {tuning_seconds:.1f}s: ease l2={l2}, itemknn k={knn}, fresh half-life={half_life}")

    rows, per_user = [], {}
    baselines = {
        "popularity": lambda: PopularityRecommender(),
        "fresh_popularity": lambda: FreshPopularity(float(half_life)),
        "itemknn": lambda: ItemKNNRecommender(int(knn)),
        "ease": lambda: EASERecommender(float(l2)),
    }
    train_view = data.as_of(data.split_start("valid"))
    for name, make in baselines.items():  # deterministic: one fit, the same for every seed
        t = time.perf_counter()
        model = make().fit(train_view).observe(test_view)
        fit_s = time.perf_counter() - t
        ranked = top_positions(model, test_view, users)
        nd, rc = per_user_ndcg(ranked, relevant, users), per_user_recall(ranked, relevant, users)
        per_user[name] = nd
        for seed in args.seeds:
            rows.append(
                {
                    "model": name,
                    "seed": seed,
                    "ndcg@10": nd.mean(),
                    "recall@20": np.nanmean(rc),
                    "fit_seconds": fit_s,
                }
            )

    n_per_source = dict(zip(["ease", "itemknn", "popularity", "fresh"], args.candidates, strict=True))
    stack_runs = []
    lists = None
    for seed in args.seeds:
        t = time.perf_counter()
        encoder = None
        if args.two_tower:
            from models.retrieval.two_tower import train_profile_model

            encoder, _ = train_profile_model(data, settings.model_copy(update={"seed": seed}))
            n_per_source["two_tower"] = args.candidates[1]

        def make_sources(view: RecData, encoder: object = encoder) -> dict[str, object]:
            out: dict[str, object] = {
                "ease": EASERecommender(float(l2)).fit(view),
                "itemknn": ItemKNNRecommender(int(knn)).fit(view),
                "popularity": PopularityRecommender().fit(view),
                "fresh": FreshPopularity(float(half_life)).fit(view),
            }
            if args.recent_days:
                h = view.histories
                recent = replace(
                    view, histories=h[h["event_ts"] >= view.now - pd.Timedelta(days=args.recent_days)]
                )
                out["ease_recent"] = EASERecommender(float(l2)).fit(recent)
            if encoder is not None:
                out["two_tower"] = TwoTowerRecommender(encoder).fit(view)
            return out

        if args.recent_days:
            n_per_source["ease_recent"] = args.candidates[0]
        if lists is None or encoder is not None:  # the lists do not depend on the seed (the two-tower does)
            lists = stacking_lists(data, make_sources, n_per_source, settings)
            print(f"stacking lists: {len(lists.windows)} windows in {time.perf_counter() - t:.1f}s")
        fit = fit_stacked_ranker(data, make_sources, n_per_source, settings, seed=seed, lists=lists)
        stack = StackedFullStack(make_sources, n_per_source, fit.ranker, fit.mmr_lambda).fit(train_view)
        stack.observe(test_view)
        fit_s = time.perf_counter() - t
        ranked = top_positions(stack, test_view, users)
        nd, rc = per_user_ndcg(ranked, relevant, users), per_user_recall(ranked, relevant, users)
        stack_runs.append(nd)
        print(
            f"seed {seed}: full_stack test ndcg@10 {nd.mean():.4f} (epochs {fit.epochs}, mmr {fit.mmr_lambda}, "
            f"valid candidate recall {fit.candidate_recall:.3f}, {fit_s:.1f}s)"
        )
        rows.append(
            {
                "model": "full_stack",
                "seed": seed,
                "ndcg@10": nd.mean(),
                "recall@20": np.nanmean(rc),
                "fit_seconds": fit_s,
            }
        )
    per_user["full_stack"] = np.mean(stack_runs, axis=0)

    frame = pd.DataFrame(rows)
    table = frame.groupby("model", sort=False).agg(
        **{
            "ndcg@10": ("ndcg@10", "mean"), "ndcg@10_std": ("ndcg@10", "std"),
            "recall@20": ("recall@20", "mean"), "recall@20_std": ("recall@20", "std"),
            "fit_seconds": ("fit_seconds", "mean"),
        }
    ).reset_index()  # fmt: skip
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    base = table[table["model"] != "full_stack"].sort_values("ndcg@10", ascending=False).iloc[0]
    full = table.set_index("model").loc["full_stack"]
    diff = per_user["full_stack"] - per_user[base["model"]]
    low, high = bootstrap(diff)
    print(
        f"full_stack / best baseline ({base['model']}) ndcg@10: {full['ndcg@10'] / base['ndcg@10']:.3f}; "
        f"paired bootstrap 95% interval of the difference over {len(users)} test users: [{low:.4f}, {high:.4f}]"
    )
    print(f"total wall time {time.perf_counter() - t0:.1f}s")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
