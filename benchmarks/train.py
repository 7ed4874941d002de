"""Training speed of the two-tower retriever and the pair ranker, on MovieLens 100k and on random catalogs.

Two kinds of data:

- ``ml-100k``: the real warehouse ``benchmarks/accuracy.py`` builds (RecBole's ml-100k atomic files, share split
  0.1 / 0.1, MiniLM item embeddings), reused from ``data/bench-accuracy/ml-100k`` when it is there. Per seed the
  two-tower model trains with the default settings (best epoch on valid) and its plain retrieval NDCG@10 on
  valid and test is printed beside its speed, so a faster model that is worse shows.
- ``--items N ...``: a random warehouse with the marts' exact columns per catalog size (engagements drawn with a
  Zipf-like popularity, random 384-d text embeddings): the figures are costs, not quality. The two-tower model
  and the ranker train one epoch each; above ``profile.full_softmax_max_items`` the two-tower uses its sampled
  softmax.

Columns: two-tower next-item targets per second of the training loop (``examples_per_s`` of the epoch log) and
the wall seconds of ``train_profile_model`` (every epoch with its valid evaluation); the ranker's data loading
seconds (``pair_context``, ``samples_to_pairs``, ``with_unexposed_negatives`` and ``build_pair_inputs`` for
train and valid: what ``train_ranker`` does before its first step), its training-loop samples/s and the wall
seconds of one-epoch ``train_ranker``; two-tower and full-stack evaluation users/s on the random catalogs.

Usage::

    RECGEN_TORCH_THREADS=1 .venv/bin/python benchmarks/train.py                 # ml-100k, 20k / 100k / 250k items
    .venv/bin/python benchmarks/train.py --datasets ml-100k --seeds 42 43 44    # quality and speed over seeds
    .venv/bin/python benchmarks/train.py --datasets random --items 1000 5000 --users 500
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from models.evaluation import full_stack
from models.ranking.pair_features import (
    build_pair_inputs,
    pair_context,
    ranker_vocabulary,
    samples_to_pairs,
    with_unexposed_negatives,
)
from models.ranking.pair_ranker import Ranker, _new_model, train_ranker
from models.recdata import MART_COLUMNS, RecData
from models.recommender import TwoTowerRecommender
from models.retrieval.two_tower import TwoTowerRetriever, evaluate_retrieval, train_profile_model
from models.settings import Settings, get_settings
from models.torch_utils import limit_cpu_threads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # accuracy.py's warehouse builder

START = pd.Timestamp("2026-10-01")


def random_marts(
    n_users: int, n_items: int, n_days: int = 10, seed: int = 0
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Marts with the contract's columns: random slates, Zipf-like exposure, 25% of impressions sampled as clicks."""
    rng = np.random.default_rng(seed)
    item_ids = np.array([f"i{i:07d}" for i in range(n_items)])
    user_ids = np.array([f"u{u:06d}" for u in range(n_users)])
    n_requests = n_users * n_days
    slate = 5
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    shown = rng.choice(n_items, size=(n_requests, slate), p=weights / weights.sum())
    req_user = np.repeat(np.arange(n_users), n_days)
    req_ts = (
        START
        + pd.to_timedelta(np.tile(np.arange(n_days), n_users), unit="D")
        + pd.to_timedelta(rng.integers(0, 86_400, n_requests), unit="s")
    )
    inter = pd.DataFrame(
        {
            "request_id": np.repeat([f"r{r}" for r in range(n_requests)], slate),
            "user_id": user_ids[np.repeat(req_user, slate)],
            "item_id": item_ids[shown.ravel()],
            "event_ts": np.repeat(req_ts, slate),
            "position": np.tile(np.arange(slate), n_requests),
            "clicked": (rng.random(n_requests * slate) < 0.1).astype(int),
        }
    )
    inter["event_date"] = inter["event_ts"].dt.normalize()
    inter["dwell_seconds"] = np.where(inter["clicked"] == 1, rng.uniform(5, 120, len(inter)), 0.0)
    inter["rating"] = np.nan
    test_start, valid_start = START + pd.Timedelta(days=n_days - 2), START + pd.Timedelta(days=n_days - 4)
    inter["split"] = np.select(
        [inter["event_ts"] >= test_start, inter["event_ts"] >= valid_start], ["test", "valid"], "train"
    )
    hist = inter[inter["clicked"] == 1].sort_values(["user_id", "event_ts"]).copy()
    hist["seq"] = hist.groupby("user_id").cumcount() + 1
    items = pd.DataFrame({c: None for c in MART_COLUMNS["item_features"]}, index=range(n_items))
    items["item_id"] = item_ids
    items["title"] = "title"
    items["body"] = "body"
    items["category"] = [f"c{i % 12}" for i in range(n_items)]
    items["creator_group"] = np.where(np.arange(n_items) % 3 == 0, "independent", "large")
    items["published_at"] = START - pd.Timedelta(days=30)
    items["content_hash"] = [hashlib.md5(i.encode()).hexdigest() for i in item_ids[:1]] * n_items
    users = pd.DataFrame({c: None for c in MART_COLUMNS["user_features"]}, index=range(n_users))
    users["user_id"] = user_ids
    users["user_group"] = np.array(["18-29", "30-49", "50+"])[np.arange(n_users) % 3]
    users["region"] = "north"
    samples = inter.copy()
    samples["label"] = samples["clicked"]
    for col in ("user_prior_impressions", "user_prior_clicks", "item_prior_impressions", "item_prior_clicks"):
        samples[col] = rng.integers(0, 50, len(samples))
    samples["user_prior_ctr"] = samples["user_prior_clicks"] / samples["user_prior_impressions"].clip(lower=1)
    samples["item_prior_ctr"] = samples["item_prior_clicks"] / samples["item_prior_impressions"].clip(lower=1)
    samples["item_age_hours"] = rng.uniform(1, 500, len(samples))
    samples["features_as_of"] = samples["event_ts"] - pd.Timedelta(seconds=1)
    bounds = pd.DataFrame(
        {
            "split": ["train", "valid", "test"],
            "starts_at": [START, valid_start, test_start],
            "ends_at": [valid_start, test_start, START + pd.Timedelta(days=n_days)],
        }
    )
    frames = {
        "interactions": inter[MART_COLUMNS["interactions"]],
        "split_boundaries": bounds,
        "user_histories": hist[MART_COLUMNS["user_histories"]],
        "user_features": users,
        "item_features": items,
        "training_samples": samples[MART_COLUMNS["training_samples"]],
    }
    text = rng.normal(size=(n_items, 384)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return frames, pd.DataFrame({"item_id": item_ids, "embedding": list(text)})


def ranker_data_seconds(data: RecData, settings: Settings, encoder: TwoTowerRetriever) -> float:
    """Seconds of the ranker's data loading: what ``train_ranker`` builds before its first step."""
    started = time.perf_counter()
    popularity = data.as_of(data.split_start("valid")).item_popularity()
    ctx = pair_context(data, encoder, settings.profile.cold_start_interest_weight, popularity)
    pairs = samples_to_pairs(data.samples, data.item_index)
    extra = settings.split.negatives_per_positive
    for split, seed in (("train", 2), ("valid", 3)):
        part, _ = with_unexposed_negatives(
            pairs[pairs["split"] == split].reset_index(drop=True),
            data, extra, settings.seed + seed, data.split_end(split),
        )  # fmt: skip
        vocab = ranker_vocabulary(data)
        ranker = Ranker(_new_model(vocab, encoder.dim, settings.ranker), vocab, settings.ranker, encoder.dim)
        build_pair_inputs(part, ctx, ranker)
    return time.perf_counter() - started


def two_tower_row(data: RecData, settings: Settings) -> tuple[dict[str, float], TwoTowerRetriever]:
    """Train the two-tower model once: loop examples/s, wall seconds, valid and test NDCG@10 of its best epoch."""
    started = time.perf_counter()
    encoder, log = train_profile_model(data, settings)
    wall = time.perf_counter() - started
    valid = evaluate_retrieval(encoder, data, "valid")
    test = evaluate_retrieval(encoder, data, "test")
    row = {
        "examples_per_s": float(log["examples_per_s"].mean()),
        "two_tower_wall_s": wall,
        "epochs": float(len(log)),
        "best_epoch": float(log["epoch"].iloc[int(np.nanargmax(log["valid_ndcg@10"].to_numpy()))])
        if log["valid_ndcg@10"].notna().any()
        else float("nan"),
        "valid_ndcg@10": valid["ndcg@10"],
        "test_ndcg@10": test["ndcg@10"],
        "valid_users": float(valid["n_users"]),
        "test_users": float(test["n_users"]),
    }
    return row, encoder


def ranker_row(
    data: RecData, settings: Settings, encoder: TwoTowerRetriever
) -> tuple[dict[str, float], Ranker]:
    """The ranker's data-loading seconds, then one epoch of ``train_ranker``: loop samples/s and wall seconds."""
    prep = ranker_data_seconds(data, settings, encoder)
    one_epoch = settings.model_copy(update={"ranker": settings.ranker.model_copy(update={"epochs": 1})})
    started = time.perf_counter()
    ranker, log = train_ranker(data, one_epoch, encoder)
    return {
        "ranker_data_s": prep,
        "ranker_samples_per_s": float(log["samples_per_s"].iloc[0]),
        "ranker_wall_s": time.perf_counter() - started,
        "n_train_samples": float((data.samples["split"] == "train").sum()),
    }, ranker


def eval_users_per_s(
    settings: Settings, data: RecData, encoder: TwoTowerRetriever, ranker: Ranker, n_eval_users: int
) -> dict[str, float]:
    """Two-tower and full-stack recommendation users/s over test users (after a warm-up call)."""
    device = settings.resolved_device
    view = data.as_of(data.split_start("test"))
    users = sorted(data.relevant("test"))[:n_eval_users] or data.users["user_id"].tolist()[:n_eval_users]
    out: dict[str, float] = {}
    for name, model_ in (
        ("two_tower", TwoTowerRecommender(encoder)),
        ("full_stack", full_stack(settings, encoder, ranker, 1.0)),
    ):
        model_.fit(view)
        model_.recommend(users[:8], k=20)  # warm-up (allocations, kernels)
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        model_.recommend(users, k=20)
        if device == "cuda":
            torch.cuda.synchronize()
        out[f"{name}_users_per_s"] = len(users) / (time.perf_counter() - started)
    out["ann"] = float(model_.index.ann is not None)
    return out


def load_ml100k(home: Path, rebuild: bool) -> RecData:
    """The ml-100k warehouse of ``benchmarks/accuracy.py`` (built there when missing) as a :class:`RecData`."""
    from accuracy import DATASETS, build_warehouse

    from models import evaluation
    from models.data import warehouse

    path = Path(DATASETS["ml-100k"]["dataset_path"])
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `make data-ml100k` first")
    os.environ.update(
        {
            "RECGEN_HOME": str(home),
            "RECGEN_DUCKDB_PATH": str(home / "recgen.duckdb"),
            "RECGEN_REPORTS_DIR": str(home / "reports"),
            "RECGEN_DATASET": "recbole",
            "RECGEN_DATASET_PATH": str(path),
        }
    )
    build_warehouse("ml-100k", home, rebuild)
    with warehouse.connect(get_settings().database) as con:
        frames = evaluation.read_marts(con)
        embeddings = evaluation.read_item_embeddings(con)
    return evaluation.build_data(frames, embeddings)


def mean_std(values: list[float]) -> str:
    """``mean +/- std`` (sample std over seeds; 0 for one seed)."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return f"{arr.mean():.4f} +/- {std:.4f}"


def run_ml100k(args: argparse.Namespace) -> None:
    """Two-tower per seed (speed and NDCG@10), then the ranker's data loading and one epoch."""
    data = load_ml100k(args.home, args.rebuild)
    print(f"\nml-100k: {data.n_items} items, {len(data.histories)} history events, seeds {args.seeds}")
    print(
        f"{'seed':>5} {'two-tower ex/s':>15} {'wall s':>7} {'epochs':>6} {'best':>5} "
        f"{'valid ndcg@10':>14} {'test ndcg@10':>13}"
    )
    rows, encoder = [], None
    for seed in args.seeds:
        settings = get_settings(device="cpu", seed=seed)
        row, enc = two_tower_row(data, settings)
        encoder = encoder or enc
        rows.append(row)
        print(
            f"{seed:>5} {row['examples_per_s']:>15.0f} {row['two_tower_wall_s']:>7.1f} {int(row['epochs']):>6} "
            f"{row['best_epoch']:>5.0f} {row['valid_ndcg@10']:>14.4f} {row['test_ndcg@10']:>13.4f}",
            flush=True,
        )
    print(
        f" mean {np.mean([r['examples_per_s'] for r in rows]):>15.0f} "
        f"{np.mean([r['two_tower_wall_s'] for r in rows]):>7.1f}   valid NDCG@10 "
        f"{mean_std([r['valid_ndcg@10'] for r in rows])}, test NDCG@10 {mean_std([r['test_ndcg@10'] for r in rows])} "
        f"({int(rows[0]['valid_users'])} / {int(rows[0]['test_users'])} users)"
    )
    if args.skip_ranker:
        return
    r, _ = ranker_row(data, get_settings(device="cpu", seed=args.seeds[0]), encoder)
    print(
        f"ranker: data loading {r['ranker_data_s']:.1f}s, {r['ranker_samples_per_s']:.0f} samples/s, "
        f"one epoch wall {r['ranker_wall_s']:.1f}s ({int(r['n_train_samples'])} train samples)",
        flush=True,
    )


def run_random(args: argparse.Namespace) -> None:
    """Per catalog size and device: two-tower and ranker training speed, evaluation users/s."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"\nrandom catalogs, {args.users} users, devices: {', '.join(devices)}")
    print(
        f"{'device':>6} {'items':>8} {'ann':>4} {'two-tower ex/s':>15} {'tt wall s':>9} {'train samples':>13} "
        f"{'ranker data s':>13} {'ranker samples/s':>17} {'ranker wall s':>13} {'two-tower users/s':>18} "
        f"{'full-stack users/s':>19}"
    )
    # a bar over the catalog sizes on stderr (elapsed, time left); rows go out through tqdm.write above it
    for n_items in tqdm(args.items, desc="catalog sizes", unit="size"):
        frames, embeddings = random_marts(args.users, n_items)
        data = RecData.from_frames(frames, embeddings)
        for device in devices:
            settings = get_settings(device=device, profile={"epochs": 1}, ranker={"epochs": 1})
            t, encoder = two_tower_row(data, settings)
            r, ranker = ranker_row(data, settings, encoder)
            e = eval_users_per_s(settings, data, encoder, ranker, args.eval_users)
            tqdm.write(
                f"{device:>6} {n_items:>8} {'yes' if e['ann'] else 'no':>4} {t['examples_per_s']:>15.0f} "
                f"{t['two_tower_wall_s']:>9.1f} {int(r['n_train_samples']):>13} {r['ranker_data_s']:>13.1f} "
                f"{r['ranker_samples_per_s']:>17.0f} {r['ranker_wall_s']:>13.1f} "
                f"{e['two_tower_users_per_s']:>18.1f} {e['full_stack_users_per_s']:>19.1f}"
            )
            sys.stdout.flush()  # tqdm.write does not flush: rows show as they come under make bench


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "random"], choices=["ml-100k", "random"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="ml-100k two-tower seeds")
    parser.add_argument("--home", type=Path, default=ROOT / "data" / "bench-accuracy" / "ml-100k")
    parser.add_argument("--rebuild", action="store_true", help="build the ml-100k warehouse again")
    parser.add_argument("--skip-ranker", action="store_true", help="ml-100k: only the two-tower seeds")
    parser.add_argument("--items", type=int, nargs="+", default=[20_000, 100_000, 250_000])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--eval-users", type=int, default=300)
    args = parser.parse_args()
    limit_cpu_threads(get_settings().torch_threads)  # RECGEN_TORCH_THREADS=1 on a shared CPU
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    started = time.perf_counter()
    if "ml-100k" in args.datasets:
        from accuracy import DATASETS

        if Path(DATASETS["ml-100k"]["dataset_path"]).exists():
            run_ml100k(args)
        else:
            print("\nml-100k skipped: data/datasets/ml-100k is missing (`make data-ml100k` gets it)")
    if "random" in args.datasets:
        run_random(args)
    print(
        f"\nwall {time.perf_counter() - started:.0f}s, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
