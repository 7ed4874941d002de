"""Variants of the stacked full stack on ml-100k under the evaluation protocol, cheaper than accuracy.py.

Reuses the warehouse ``benchmarks/accuracy.py`` built (``data/bench-accuracy/ml-100k``), the sources'
hyperparameters chosen on valid (``models.evaluation.tune_sources``) and one two-tower encoder per seed (trained
once under the protocol and cached in ``--cache``), then for every variant (ranker settings overrides, JSON)
fits the stacked ranker per seed exactly as ``fit_stack`` does in the protocol (time-based stacking, epochs and
MMR on valid), and prints per variant: the full stack's valid NDCG@10 (fit on train, as of the valid start;
what a variant is chosen on), its test NDCG@10 (observed at the test cutoff, no refit), the ratio and paired
bootstrap interval against recency-weighted popularity (ml-100k's best baseline) and the same split by users
with and without history at the test cutoff. Choose variants on valid; the test columns are for the report.

Usage::

    RECGEN_TORCH_THREADS=1 .venv/bin/python benchmarks/accuracy.py --datasets ml-100k   # once: the warehouse
    RECGEN_TORCH_THREADS=1 .venv/bin/python benchmarks/stack_variants.py \\
        '{"default": {}, "hidden32": {"hidden_dim": 32}, "fresh_hl14": {"_fresh_hl": 14.0}}'

``_fresh_hl`` overrides the half-life of the stack's recency-popularity source (otherwise the baseline's, as
chosen on valid); ``_refit_ranker`` (true) trains the ranker again on every window including valid's, for the
epochs chosen on valid, before test (the "refit on train + valid" protocol for the ranker); ``_refit_sources``
(true) fits the sources again on the test view (EASE's and item-kNN's weights from train + valid) instead of
observing it; every other key is a ``RankerSettings`` field. The valid column is the no-refit ranker's either way.
``"default": {}`` is today's default, the blended ranker; the rows of the README measured before it was the
default ran with the torch ranker, ``{"stack_model": "torch"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Run every variant of argv[1] over the seeds and print one line each."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", help='JSON: {"name": {RankerSettings overrides}, ...}')
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--home", type=Path, default=ROOT / "data" / "bench-accuracy" / "ml-100k")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "bench-accuracy" / "stack-variants")
    args = parser.parse_args()
    os.environ.update(
        {
            "RECGEN_HOME": str(args.home),
            "RECGEN_DUCKDB_PATH": str(args.home / "recgen.duckdb"),
            "RECGEN_REPORTS_DIR": str(args.cache / "reports"),
            "RECGEN_DATASET": "recbole",
            "RECGEN_DATASET_PATH": str(ROOT / "data" / "datasets" / "ml-100k"),
        }
    )
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)

    import pandas as pd

    from models import evaluation as ev
    from models.data import warehouse
    from models.ranking.stack_features import concat_examples
    from models.ranking.stacked_ranker import train_stacked_ranker
    from models.recommender import StackedFullStack, StackSources, fit_stacked_ranker, stacking_lists
    from models.retrieval.two_tower import TwoTowerRetriever
    from models.settings import get_settings
    from models.torch_utils import limit_cpu_threads

    settings = get_settings()
    limit_cpu_threads(settings.torch_threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    with warehouse.connect(settings.database) as con:
        data = ev.build_data(ev.read_marts(con), ev.read_item_embeddings(con))
    tuned_path = args.cache / "tuned.json"
    if not tuned_path.exists():
        tuned_path.write_text(json.dumps({k: dict(v) for k, v in ev.tune_sources(settings, data).items()}))
    tuned = json.loads(tuned_path.read_text())
    encoders = {}
    for seed in args.seeds:
        path = args.cache / f"two_tower_{seed}"
        if not path.exists():
            ev.fit_profile_model(settings.model_copy(update={"seed": seed}), data)[0].save(path)
        encoders[seed] = TwoTowerRetriever.load(path)
    train_view = data.as_of(data.split_start("valid"))
    test_view = data.as_of(data.split_start("test"))
    specs = ev.baseline_specs(settings, data)
    valid_users = ev.evaluation_users(data, "valid", settings.evaluation.max_users, settings.seed)
    baseline, *_ = ev.tune_on_valid(
        "recency_popularity", specs["recency_popularity"], data, args.seeds[0], valid_users
    )
    base = ev.evaluate_models(
        settings, data, {"recency_popularity": ev.observe(baseline, test_view)}, "test"
    ).per_user.set_index("user_id")["ndcg@10"]
    history = test_view.history_idx()
    print(f"recency_popularity test NDCG@10 {base.mean():.4f}; sources {tuned}", flush=True)

    for name, overrides in json.loads(args.variants).items():
        overrides = dict(overrides)
        my_tuned = json.loads(json.dumps(tuned))
        if "_fresh_hl" in overrides:
            my_tuned["recency_popularity"]["half_life_days"] = float(overrides.pop("_fresh_hl"))
        refit_ranker = bool(overrides.pop("_refit_ranker", False))
        refit_sources = bool(overrides.pop("_refit_sources", False))
        variant = settings.model_copy(update={"ranker": settings.ranker.model_copy(update=overrides)})
        if refit_ranker and variant.ranker.stack_model != "torch":
            raise SystemExit(f'{name}: _refit_ranker refits the torch ranker only: add "stack_model": "torch"')
        rows, per_user = [], []
        t0 = time.perf_counter()
        for seed in args.seeds:
            seeded = variant.model_copy(update={"seed": seed})
            sources = StackSources.from_tuned(my_tuned, encoders[seed], seeded)
            n = ev.stack_candidates(seeded, True)
            lists = stacking_lists(data, sources, n, seeded)
            fit = fit_stacked_ranker(data, sources, n, seeded, seed=seed, lists=lists)
            model = StackedFullStack(sources, n, fit.ranker, fit.mmr_lambda, encoders[seed]).fit(train_view)
            valid = ev.evaluate_models(variant, data, {"full_stack": model}, "valid").table.iloc[0]["ndcg@10"]
            if refit_ranker:
                ranker, _ = train_stacked_ranker(
                    concat_examples([*lists.train, lists.valid]), None, None, list(n), data.item_text,
                    seeded.ranker, seeded.resolved_device, seed, epochs=fit.epochs,
                )  # fmt: skip
                model = StackedFullStack(sources, n, ranker, fit.mmr_lambda, encoders[seed]).fit(train_view)
            tested = model.fit(test_view) if refit_sources else ev.observe(model, test_view)
            test = ev.evaluate_models(variant, data, {"full_stack": tested}, "test")
            per_user.append(test.per_user.set_index("user_id")["ndcg@10"])
            rows.append({"valid": float(valid), "test": float(per_user[-1].mean()), "epochs": fit.epochs})
        table = pd.DataFrame(rows)
        pair = pd.concat([pd.concat(per_user, axis=1).mean(axis=1).rename("fs"), base.rename("b")], axis=1)
        pair = pair.dropna()
        delta, low, high = ev.paired_bootstrap(
            pair["fs"].to_numpy(), pair["b"].to_numpy(), settings.evaluation.bootstrap_samples, settings.seed
        )
        cold = [u for u in pair.index if len(history.get(u, ())) == 0]
        warm = [u for u in pair.index if len(history.get(u, ())) > 0]
        print(
            f"{name}: valid {table['valid'].mean():.4f} +/- {table['valid'].std():.4f} | test "
            f"{table['test'].mean():.4f} +/- {table['test'].std():.4f}, ratio {pair['fs'].mean() / pair['b'].mean():.3f}, "
            f"delta {delta:+.4f} [{low:+.4f}, {high:+.4f}] | no history ({len(cold)}) "
            f"{pair.loc[cold, 'fs'].mean():.4f} vs {pair.loc[cold, 'b'].mean():.4f}, with history ({len(warm)}) "
            f"{pair.loc[warm, 'fs'].mean():.4f} vs {pair.loc[warm, 'b'].mean():.4f} | epochs "
            f"{table['epochs'].tolist()} ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
