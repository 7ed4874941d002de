"""ML throughput at growing catalog sizes: ranker training samples/s and evaluation users/s, CPU and GPU.

For each catalog size a random warehouse with the marts' exact columns is built in memory (engagements drawn
with a Zipf-like popularity, random 384-d text embeddings): the figures are costs, not quality, so no learning
signal is needed. Per device it then prints

- ranker training samples/s (one epoch of ``models.ranking.train_ranker``: DIN attention, cross features, AdamW
  over an id embedding that grows with the catalog),
- two-tower retrieval users/s (exact top-K by one matrix product; IVF above ``ann_threshold_items``),
- full-stack users/s (retrieval + popular/fresh union + ranker over ~130 candidates + MMR).

Usage::

    .venv/bin/python benchmarks/train.py                       # catalogs of 1k, 20k and 250k items
    .venv/bin/python benchmarks/train.py --items 1000 5000 --users 500
    RECGEN_TORCH_THREADS=1 .venv/bin/python benchmarks/train.py   # on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np
import pandas as pd
import torch

from models.evaluation import full_stack
from models.profile import ProfileEncoder, TwoTowerModel
from models.ranking import train_ranker
from models.recdata import MART_COLUMNS, RecData
from models.recommender import TwoTowerRecommender
from models.settings import Settings, get_settings
from models.torch_utils import limit_cpu_threads

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


def bench(settings: Settings, data: RecData, n_eval_users: int) -> dict[str, float]:
    """Ranker samples/s (one epoch) and evaluation users/s on ``settings.device``."""
    device = settings.resolved_device
    model = TwoTowerModel(
        data.n_items, data.items["category"].nunique(), data.item_text.shape[1], settings.profile
    )
    categories = sorted(data.items["category"].unique().tolist())
    encoder = ProfileEncoder(model, data.items["item_id"].tolist(), categories, settings.profile, device)
    ranker, log = train_ranker(data, settings, encoder)
    view = data.as_of(data.split_start("test"))
    users = sorted(data.relevant("test"))[:n_eval_users] or data.users["user_id"].tolist()[:n_eval_users]
    out = {
        "ranker_samples_per_s": float(log["samples_per_s"].iloc[0]),
        "n_train_samples": float((data.samples["split"] == "train").sum()),
    }
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, nargs="+", default=[1_000, 20_000, 250_000])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--eval-users", type=int, default=300)
    args = parser.parse_args()
    limit_cpu_threads(get_settings().torch_threads)  # RECGEN_TORCH_THREADS=1 on a shared CPU
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices: {', '.join(devices)}")
    header = f"{'device':>6} {'items':>8} {'ann':>4} {'train samples':>13} {'ranker samples/s':>17} {'two-tower users/s':>18} {'full-stack users/s':>19}"
    print(header)
    for n_items in args.items:
        frames, embeddings = random_marts(args.users, n_items)
        data = RecData.from_frames(frames, embeddings)
        for device in devices:
            settings = get_settings(device=device, ranker={"epochs": 1})
            r = bench(settings, data, args.eval_users)
            print(
                f"{device:>6} {n_items:>8} {'yes' if r['ann'] else 'no':>4} {int(r['n_train_samples']):>13} "
                f"{r['ranker_samples_per_s']:>17.0f} {r['two_tower_users_per_s']:>18.1f} {r['full_stack_users_per_s']:>19.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
