"""Paired speed check against another checkout (e.g. main): alternate the two versions under the same load.

On a machine shared with other jobs, two benchmark runs minutes apart see different loads. This script loads
the ml-100k warehouse once (``benchmarks/train.py``'s, built by ``benchmarks/accuracy.py``) and alternates

- one epoch of ``train_profile_model`` from the other checkout and from this one (examples/s of the loop),
- the ranker's data loading with the other checkout's ``models/ranking.py`` (a checkout from before the split
  into ``models/ranking/``) and this one's, given the same
  (untrained, this checkout's) two-tower encoder so the user vectors cost the same: pairs + unexposed
  negatives, ``user_state``, ``build_pair_inputs`` and ``grouped_ndcg`` seconds, and whether the two
  ``PairInputs`` are identical.

Usage::

    git archive main | tar -x -C /tmp/recgen-main     # a copy of main's files
    RECGEN_TORCH_THREADS=1 nice -n 10 .venv/bin/python benchmarks/train_paired.py --other /tmp/recgen-main
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def load_module(path: Path, name: str) -> ModuleType:
    """Import one file of the other checkout under ``name`` (its own imports resolve to this checkout)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def ranker_prep(m: ModuleType, data: Any, encoder: Any, settings: Any) -> tuple[dict[str, float], Any]:
    """Seconds of each stage of the ranker's train-split data loading with ranking module ``m``."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    popularity = data.as_of(data.split_start("valid")).item_popularity()
    ctx = m.pair_context(data, encoder, settings.profile.cold_start_interest_weight, popularity)
    pairs = m.samples_to_pairs(data.samples, data.item_index)
    vocab = {
        "item": data.items["item_id"].tolist(),
        "category": sorted(data.items["category"].dropna().unique().tolist()),
        "creator_group": sorted(data.items["creator_group"].dropna().unique().tolist()),
        "user_group": sorted(data.users["user_group"].dropna().astype(str).unique().tolist()),
        "region": sorted(data.users["region"].dropna().astype(str).unique().tolist()),
    }
    ranker = m.Ranker(m._new_model(vocab, encoder.dim, settings.ranker), vocab, settings.ranker, encoder.dim)
    part, groups = m.with_unexposed_negatives(
        pairs[pairs["split"] == "train"].reset_index(drop=True),
        data, settings.split.negatives_per_positive, settings.seed + 2, data.split_end("train"),
    )  # fmt: skip
    seconds["pairs+negatives"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = m.user_state(part, ctx)
    seconds["user_state"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inputs = m.build_pair_inputs(part, ctx, ranker, state)
    seconds["build_pair_inputs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    m.grouped_ndcg(groups, inputs.label, inputs.dense[:, 0])
    seconds["grouped_ndcg"] = time.perf_counter() - t0
    return seconds, inputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--other", type=Path, default=None, help="the other checkout's root (e.g. main)")
    parser.add_argument("--home", type=Path, default=ROOT / "data" / "bench-accuracy" / "ml-100k")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--other-batch-size", type=int, default=256, help="profile.batch_size of the other")
    args = parser.parse_args()
    if args.other is None:  # `make bench` runs every script without arguments
        print("train_paired.py: nothing to compare (pass --other DIR, a checkout to compare with)")
        return
    import train as bench

    from models.ranking import pair_features, pair_ranker

    # this checkout's pair-ranker surface (split over models/ranking/); the other is a pre-split ranking.py
    this_ranking = SimpleNamespace(**vars(pair_features), **vars(pair_ranker))
    from models.retrieval import two_tower as this_two_tower
    from models.settings import get_settings
    from models.torch_utils import limit_cpu_threads

    limit_cpu_threads(get_settings().torch_threads)
    other_two_tower = load_module(args.other / "models" / "two_tower.py", "other_two_tower")
    other_ranking = load_module(args.other / "models" / "ranking.py", "other_ranking")
    data = bench.load_ml100k(args.home, rebuild=False)
    for rep in range(args.reps):
        for name, module, batch in (
            ("other", other_two_tower, args.other_batch_size),
            ("this", this_two_tower, None),
        ):
            profile = {"epochs": 1} | ({"batch_size": batch} if batch else {})
            settings = get_settings(device="cpu", profile=profile)
            load = os.getloadavg()[0]
            started = time.perf_counter()
            _, log = module.train_profile_model(data, settings)
            print(
                f"two-tower {name:>5} rep {rep}: {log['examples_per_s'].iloc[0]:.0f} examples/s "
                f"(batch {settings.profile.batch_size}), epoch + valid {time.perf_counter() - started:.1f}s, "
                f"load {load:.1f}",
                flush=True,
            )
    settings = get_settings(device="cpu")
    cats = sorted(data.items["category"].dropna().unique().tolist())
    model = this_two_tower.TwoTowerModel(data.n_items, len(cats), data.item_text.shape[1], settings.profile)
    encoder = this_two_tower.TwoTowerRetriever(model, data.items["item_id"].tolist(), cats, settings.profile)
    for rep in range(args.reps):
        results = {}
        for name, module in (("other", other_ranking), ("this", this_ranking)):
            load = os.getloadavg()[0]
            seconds, results[name] = ranker_prep(module, data, encoder, settings)
            print(f"ranker data {name:>5} rep {rep}: load {load:.1f}, " + ", ".join(
                f"{k} {v:.2f}s" for k, v in seconds.items()), flush=True)  # fmt: skip
        a, b = results["other"], results["this"]
        same = (
            np.array_equal(a.dense, b.dense)
            and np.array_equal(a.candidate, b.candidate)
            and np.array_equal(a.windows.items, b.windows.items)
            and torch.equal(a.user_vec, b.user_vec)
        )
        print(f"ranker data rep {rep}: PairInputs identical: {same}", flush=True)


if __name__ == "__main__":
    main()
