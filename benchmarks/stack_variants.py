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
observing it; ``_blend_weights`` (a list of the torch ranker's weights) and ``_gbdt`` (``RankerSettings``
overrides of the LightGBM member, e.g. its own stacking windows) fit the blend's two members once per seed and
print one line per weight (``name w=0.5``); every other key is a ``RankerSettings`` field. The valid column is the no-refit ranker's either way.
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
    from models.ranking.blended_ranker import BlendedStackedRanker
    from models.ranking.stack_features import concat_examples
    from models.ranking.stacked_ranker import train_stacked_ranker
    from models.recommender import (
        StackedFullStack,
        StackSources,
        choose_mmr,
        fit_stacked_ranker,
        stacking_lists,
    )
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
        blend_weights = overrides.pop("_blend_weights", None)
        gbdt_overrides = overrides.pop("_gbdt", None)
        members = blend_weights is not None or gbdt_overrides is not None
        variant = _ranker(settings, **overrides)
        if refit_ranker and (members or variant.ranker.stack_model != "torch"):
            raise SystemExit(
                f'{name}: _refit_ranker refits the torch ranker only: add "stack_model": "torch"'
            )
        results: dict[str, dict[str, list]] = {}
        t0 = time.perf_counter()
        for seed in args.seeds:
            seeded = variant.model_copy(update={"seed": seed})
            sources = StackSources.from_tuned(my_tuned, encoders[seed], seeded)
            n = ev.stack_candidates(seeded, True)
            lists = stacking_lists(data, sources, n, seeded)
            if not members:
                fit = fit_stacked_ranker(data, sources, n, seeded, seed=seed, lists=lists)
                fitted = {name: (fit.ranker, fit.mmr_lambda, fit.epochs)}
            else:
                # the blend's members fitted once per seed, then blended at every weight (MMR chosen on valid)
                torch_fit = fit_stacked_ranker(
                    data, sources, n, _ranker(seeded, stack_model="torch"), seed, lists
                )
                gbdt = _ranker(seeded, stack_model="lightgbm", **(gbdt_overrides or {}))
                same = (gbdt.ranker.stack_windows, gbdt.ranker.stack_window_stride) == (
                    seeded.ranker.stack_windows, seeded.ranker.stack_window_stride,
                )  # fmt: skip
                gbdt_lists = lists if same else stacking_lists(data, sources, n, gbdt)
                gbdt_fit = fit_stacked_ranker(data, sources, n, gbdt, seed, gbdt_lists)
                fitted = {}
                for w in blend_weights or [seeded.ranker.stack_blend_torch_weight]:
                    blend = BlendedStackedRanker([torch_fit.ranker, gbdt_fit.ranker], [w, 1.0 - w])
                    lam, _ = choose_mmr(
                        blend, lists.valid, lists.valid_labels, data.item_text, seeded.ranker.mmr_lambda_grid
                    )
                    fitted[f"{name} w={w:g}"] = (blend, lam, torch_fit.epochs)
            for label, (ranker, mmr_lambda, epochs) in fitted.items():
                model = StackedFullStack(sources, n, ranker, mmr_lambda, encoders[seed]).fit(train_view)
                valid = ev.evaluate_models(variant, data, {"full_stack": model}, "valid").table.iloc[0][
                    "ndcg@10"
                ]
                if refit_ranker:
                    ranker, _ = train_stacked_ranker(
                        concat_examples([*lists.train, lists.valid]), None, None, list(n), data.item_text,
                        seeded.ranker, seeded.resolved_device, seed, epochs=epochs,
                    )  # fmt: skip
                    model = StackedFullStack(sources, n, ranker, mmr_lambda, encoders[seed]).fit(train_view)
                tested = model.fit(test_view) if refit_sources else ev.observe(model, test_view)
                test = ev.evaluate_models(variant, data, {"full_stack": tested}, "test")
                row = results.setdefault(label, {"rows": [], "per_user": []})
                row["per_user"].append(test.per_user.set_index("user_id")["ndcg@10"])
                row["rows"].append(
                    {"valid": float(valid), "test": float(row["per_user"][-1].mean()), "epochs": epochs}
                )
        for label, result in results.items():
            _report(label, pd.DataFrame(result["rows"]), result["per_user"], base, history, settings, t0)


def _ranker(settings, **overrides):
    """``settings`` with ``overrides`` on its ranker settings."""
    return settings.model_copy(update={"ranker": settings.ranker.model_copy(update=overrides)})


def _report(label, table, per_user, base, history, settings, t0) -> None:
    """One line: valid and test NDCG@10 over seeds, the ratio and paired interval against the baseline."""
    import pandas as pd

    from models import evaluation as ev

    pair = pd.concat([pd.concat(per_user, axis=1).mean(axis=1).rename("fs"), base.rename("b")], axis=1)
    pair = pair.dropna()
    delta, low, high = ev.paired_bootstrap(
        pair["fs"].to_numpy(), pair["b"].to_numpy(), settings.evaluation.bootstrap_samples, settings.seed
    )
    cold = [u for u in pair.index if len(history.get(u, ())) == 0]
    warm = [u for u in pair.index if len(history.get(u, ())) > 0]
    print(
        f"{label}: valid {table['valid'].mean():.4f} +/- {table['valid'].std():.4f} | per seed "
        f"{[round(v, 4) for v in table['valid']]} | test {table['test'].mean():.4f} +/- {table['test'].std():.4f} "
        f"{[round(v, 4) for v in table['test']]}, "
        f"ratio {pair['fs'].mean() / pair['b'].mean():.3f}, delta {delta:+.4f} [{low:+.4f}, {high:+.4f}] | "
        f"no history ({len(cold)}) {pair.loc[cold, 'fs'].mean():.4f} vs {pair.loc[cold, 'b'].mean():.4f}, "
        f"with history ({len(warm)}) {pair.loc[warm, 'fs'].mean():.4f} vs {pair.loc[warm, 'b'].mean():.4f} | "
        f"epochs {table['epochs'].tolist()} ({time.perf_counter() - t0:.0f}s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
