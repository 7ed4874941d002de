"""Accuracy of every model under the evaluation protocol, on the simulator and on MovieLens 100k.

For each dataset it builds (or reuses) a real warehouse, the way ``make run`` does: the raw snapshot, the
validated ingest into DuckDB, ``dbt build`` with the split settings (the share split 0.1 / 0.1 for ml-100k,
the days split for the simulator) and the MiniLM item embeddings. Then ``models.evaluation.train_and_evaluate``
trains the neural models and runs the protocol (learn on train, choose on valid, no refit, every seed) over
every model, and the table prints with mean +/- std over seeds, fit seconds and the paired bootstrap interval
of NDCG@10 full_stack minus the best baseline. Progress lines (EpochProgress) print while it runs.

Usage::

    make data-ml100k                                    # once: data/datasets/ml-100k (RecBole atomic files)
    RECGEN_TORCH_THREADS=1 .venv/bin/python benchmarks/accuracy.py
    .venv/bin/python benchmarks/accuracy.py --datasets ml-100k --seeds 42 43 44
    .venv/bin/python benchmarks/accuracy.py --datasets ml-100k-earlier   # a backtest without the test window

``ml-100k-earlier`` (not run by default) is ml-100k without its test window's events, split again by share so
that its test window is about ml-100k's valid window: variants are chosen on its windows and ml-100k's valid
window, never on ml-100k's test window (``benchmarks/results/selection_criterion_2026-12-03.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {
    "simulator": {"dataset": "simulator"},
    "ml-100k": {"dataset": "recbole", "dataset_path": str(ROOT / "data" / "datasets" / "ml-100k")},
    # a backtest for choosing variants without the test window: ml-100k without its test window's events, split
    # again by share (1/9 of the rest is about the last 10 % of the whole), so this dataset's test window is
    # about ml-100k's valid window and its valid window the 10 % before (see earlier_atomic_files)
    "ml-100k-earlier": {
        "dataset": "recbole",
        "dataset_path": str(ROOT / "data" / "datasets" / "ml-100k-earlier"),
        "split": {"test_share": "0.111111", "valid_share": "0.111111"},
    },
}


def earlier_atomic_files(source: Path, target: Path, built_home: Path) -> None:
    """``source``'s RecBole atomic files without the events at or after the test start of the warehouse built
    from them in ``built_home`` (its ``marts.split_boundaries``), written to ``target``."""
    import shutil

    import duckdb

    if (target / f"{target.name}.inter").exists():
        return
    with duckdb.connect(str(built_home / "recgen.duckdb"), read_only=True) as con:
        (test_start,) = con.execute(
            "select epoch(starts_at) from marts.split_boundaries where split = 'test'"
        ).fetchone()
    target.mkdir(parents=True, exist_ok=True)
    inter = pd.read_csv(source / f"{source.name}.inter", sep="\t", dtype=str)
    stamp = [c for c in inter.columns if c.startswith("timestamp")][0]
    kept = inter[inter[stamp].astype(float) < float(test_start)]
    kept.to_csv(target / f"{target.name}.inter", sep="\t", index=False)
    for suffix in ("item", "user"):
        shutil.copy(source / f"{source.name}.{suffix}", target / f"{target.name}.{suffix}")
    print(f"[{target.name}] {len(kept)} of {len(inter)} events (before the test start {test_start:.0f})")


def build_warehouse(name: str, home: Path, rebuild: bool) -> None:
    """Snapshot, ingest, dbt build and item embeddings into ``home`` (skipped when already built)."""
    from models.data import warehouse
    from models.data.ingest import ingest_snapshot
    from models.data.sources import write_raw_snapshot
    from models.encoders import TextEncoder, embed_items, write_item_embeddings
    from models.settings import get_settings

    settings = get_settings()
    done = home / "built.json"
    if done.exists() and not rebuild:
        print(f"[{name}] reusing the warehouse in {home} (--rebuild to build it again)", flush=True)
        return
    settings.ensure_dirs()
    t0 = time.perf_counter()
    files = write_raw_snapshot(settings)
    with warehouse.connect(settings.database, config=warehouse.duckdb_config(settings)) as con:
        report = ingest_snapshot(con, files, source=settings.dataset)
    events = report.tables["events"]
    print(
        f"[{name}] ingest: {events.rows_clean} events clean, {report.rows_quarantined} rows quarantined "
        f"({time.perf_counter() - t0:.1f}s)",
        flush=True,
    )
    t0 = time.perf_counter()
    dbt = Path(sys.prefix) / "bin" / "dbt"
    args = ["build", "--quiet", "--vars", json.dumps(settings.split.dbt_vars())]
    env = {**os.environ, **warehouse.dbt_env(settings), "DBT_TARGET_PATH": str(home / "dbt_target")}
    env["DBT_LOG_PATH"] = str(home / "dbt_logs")
    subprocess.run(
        [str(dbt), *args, "--profiles-dir", ".", "--project-dir", "."],
        cwd=ROOT / "dbt_project",
        env=env,
        check=True,
    )
    print(
        f"[{name}] dbt build with split {settings.split.dbt_vars()} ({time.perf_counter() - t0:.1f}s)",
        flush=True,
    )
    t0 = time.perf_counter()
    enc = settings.encoder
    encoder = TextEncoder(enc.model_name_or_path, settings.resolved_device, enc.batch_size, enc.max_length)
    with warehouse.connect(settings.database) as con:
        items = con.execute("select item_id, title, body, content_hash from marts.item_features").df()
        write_item_embeddings(con, embed_items(items, encoder, None))
    print(f"[{name}] {len(items)} item embeddings ({time.perf_counter() - t0:.1f}s)", flush=True)
    done.write_text(json.dumps({"built_at": pd.Timestamp.now().isoformat()}))


def evaluate(name: str, seeds: list[int]) -> tuple[pd.DataFrame, dict[str, object], dict[str, float], int]:
    """The protocol's test table, the bootstrap comparison, stage seconds and the number of test users."""
    from models import evaluation
    from models.data import warehouse
    from models.settings import get_settings
    from models.torch_utils import limit_cpu_threads

    settings = get_settings()
    limit_cpu_threads(settings.torch_threads)
    with warehouse.connect(settings.database) as con:
        frames = evaluation.read_marts(con)
        embeddings = evaluation.read_item_embeddings(con)
    data = evaluation.build_data(frames, embeddings)
    result = evaluation.train_and_evaluate(settings, data, seeds)
    return result.test.table, result.test.comparison, result.seconds, int(result.test.timings["n_users"])


def print_table(name: str, table: pd.DataFrame, comparison: dict[str, object], n_users: int) -> None:
    """Mean +/- std over seeds per model, fit seconds, and the bootstrap line."""
    n_seeds = int(table["n_seeds"].max())
    print(f"\n{name}: {n_users} test users, {n_seeds} seeds (mean +/- std over seeds)")
    print("| model | ndcg@10 | recall@20 | mrr@10 | coverage | fit s |\n|---|---|---|---|---|---|")
    for r in table.to_dict("records"):
        print(
            f"| {r['model']} | {r['ndcg@10']:.4f} +/- {r['ndcg@10_std']:.4f} | "
            f"{r['recall@20']:.4f} +/- {r['recall@20_std']:.4f} | {r['mrr@10']:.4f} | {r['coverage']:.3f} | "
            f"{r['fit_seconds']:.1f} |"
        )
    if comparison:
        print(
            f"full_stack - {comparison['best_baseline']}: NDCG@10 {comparison['delta_ndcg@10']:+.4f}, paired "
            f"bootstrap 95% interval {comparison['delta_ci_low']:+.4f} .. {comparison['delta_ci_high']:+.4f} "
            f"over {comparison['n_users']} users; ratio {comparison['ratio_ndcg@10']:.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["simulator", "ml-100k"], choices=list(DATASETS))
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="default: settings.evaluation.seeds"
    )
    parser.add_argument("--home", type=Path, default=ROOT / "data" / "bench-accuracy")
    parser.add_argument("--rebuild", action="store_true", help="build the warehouses again")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    logging.getLogger("models").setLevel(logging.INFO)  # EpochProgress lines
    for name in args.datasets:
        home = args.home / name
        overrides = DATASETS[name]
        if name.startswith("ml-100k") and not Path(DATASETS["ml-100k"]["dataset_path"]).exists():
            raise SystemExit(
                f"{DATASETS['ml-100k']['dataset_path']} is missing: run `make data-ml100k` first"
            )
        if name == "ml-100k-earlier":
            if not (args.home / "ml-100k" / "built.json").exists():
                raise SystemExit(
                    "ml-100k-earlier is cut from the ml-100k warehouse: run --datasets ml-100k first"
                )
            earlier_atomic_files(
                Path(DATASETS["ml-100k"]["dataset_path"]),
                Path(overrides["dataset_path"]),
                args.home / "ml-100k",
            )
        for key in ("test_share", "valid_share"):
            if key in overrides.get("split", {}):
                os.environ[f"RECGEN_SPLIT__{key.upper()}"] = overrides["split"][key]
            else:
                os.environ.pop(f"RECGEN_SPLIT__{key.upper()}", None)
        os.environ.update(
            {
                "RECGEN_HOME": str(home),
                "RECGEN_DUCKDB_PATH": str(home / "recgen.duckdb"),
                "RECGEN_REPORTS_DIR": str(home / "reports"),
                "RECGEN_DATASET": overrides["dataset"],
            }
        )
        if "dataset_path" in overrides:
            os.environ["RECGEN_DATASET_PATH"] = overrides["dataset_path"]
        else:
            os.environ.pop("RECGEN_DATASET_PATH", None)
        started = time.perf_counter()
        build_warehouse(name, home, args.rebuild)
        table, comparison, seconds, n_users = evaluate(name, args.seeds)
        from models.evaluation import write_report

        write_report(table, home / "reports", "evaluation.csv")
        print_table(name, table, comparison, n_users)
        stages = ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items())
        print(
            f"[{name}] wall {time.perf_counter() - started:.0f}s ({stages}); table: {home / 'reports' / 'evaluation.csv'}"
        )


if __name__ == "__main__":
    main()
