"""Data-layer cost at growing simulator sizes: simulate -> Parquet -> validated ingest -> dbt build.

Prints wall time per stage and peak resident memory for each size, each size in a fresh process and a fresh
DuckDB file, so the growth of cost with size is visible. Usage:

    .venv/bin/python benchmarks/pipeline.py                 # 10k, 100k, 1M users
    .venv/bin/python benchmarks/pipeline.py --users 10000 100000
    .venv/bin/python benchmarks/pipeline.py --users 100000 --memory-limit 4GB   # DuckDB memory_limit

``--memory-limit`` sets ``RECGEN_DUCKDB_MEMORY_LIMIT`` (settings.duckdb_memory_limit) for the ingest connection
and for dbt's profile (``--dbt-memory-limit`` gives dbt another one); DuckDB spills past it to ``<db>.tmp`` (or
``--temp-directory``). At 100k users both ingest and dbt fit in 4GB (dbt did not before int_events__engagement:
int_impressions__labeled ran out of memory below 10GB). "sim RSS" is the Python process's peak after simulating,
so a larger "py RSS" was reached in ingest; "dbt RSS" is the dbt process's own peak (it runs from this process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent

STAGE = r"""
import json, os, resource, time
from models.settings import get_settings
from models.data.sources import write_raw_snapshot
from models.data.ingest import ingest_snapshot
from models.data import warehouse

s = get_settings()
s.ensure_dirs()
t0 = time.perf_counter(); files = write_raw_snapshot(s); t1 = time.perf_counter()
sim_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with warehouse.connect(s.database, config=warehouse.duckdb_config(s)) as con:
    report = ingest_snapshot(con, files, source="simulator")
t2 = time.perf_counter()
self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
dbt_env = warehouse.dbt_env(s)
if os.environ.get("BENCH_DBT_MEMORY_LIMIT"):
    dbt_env["RECGEN_DUCKDB_MEMORY_LIMIT"] = os.environ["BENCH_DBT_MEMORY_LIMIT"]
print("RESULT " + json.dumps({
    "events": report.tables["events"].rows_clean, "simulate_s": t1 - t0, "ingest_s": t2 - t1,
    "peak_rss_mb_simulate": sim_rss, "peak_rss_mb_python": self_rss, "dbt_env": dbt_env,
    "dbt_vars": {"valid_days": s.split.valid_days, "test_days": s.split.test_days}}))
"""


def run_dbt(env: dict[str, str], dbt_env: dict[str, str], dbt_vars: dict[str, int], n_users: int) -> dict:
    """`dbt build` in its own process, started from this small one; its time and its own peak RSS.

    Started from the ingesting process, dbt's ru_maxrss would start at that process's peak (Linux carries
    the high-water mark of the spawning process over exec), hiding a dbt peak below the ingest one.
    """
    dbt = Path(sys.prefix) / "bin" / "dbt"
    args = ["build", "--quiet", "--vars", json.dumps(dbt_vars), "--profiles-dir", ".", "--project-dir", "."]
    start = time.perf_counter()
    process = subprocess.Popen([str(dbt), *args], cwd=ROOT / "dbt_project", env={**env, **dbt_env})
    _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"size {n_users}: dbt build failed (exit {code})")
    return {"dbt_s": time.perf_counter() - start, "peak_rss_mb_dbt": usage.ru_maxrss / 1024}


def run_size(
    n_users: int,
    n_items: int,
    n_days: int,
    memory_limit: str = "",
    temp_directory: str = "",
    dbt_memory_limit: str = "",
) -> dict[str, float]:
    """Run the data layer for one size in a fresh process and home; return its figures."""
    with tempfile.TemporaryDirectory(prefix="recgen-bench-") as home:
        env = {
            **os.environ,
            "RECGEN_DUCKDB_MEMORY_LIMIT": memory_limit,
            "RECGEN_DUCKDB_TEMP_DIRECTORY": temp_directory,
            "BENCH_DBT_MEMORY_LIMIT": dbt_memory_limit,
            "RECGEN_HOME": home,
            "RECGEN_DUCKDB_PATH": f"{home}/recgen.duckdb",
            "RECGEN_SIMULATOR__N_USERS": str(n_users),
            "RECGEN_SIMULATOR__N_ITEMS": str(n_items),
            "RECGEN_SIMULATOR__N_DAYS": str(n_days),
            "DBT_TARGET_PATH": f"{home}/dbt_target",
            "DBT_LOG_PATH": f"{home}/dbt_logs",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", STAGE], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            raise SystemExit(f"size {n_users} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
        figures = json.loads(line.removeprefix("RESULT "))
        figures.update(run_dbt(env, figures.pop("dbt_env"), figures.pop("dbt_vars"), n_users))
        figures["db_mb"] = Path(env["RECGEN_DUCKDB_PATH"]).stat().st_size / 2**20
        figures["total_s"] = time.perf_counter() - start
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument(
        "--memory-limit", default="", help="DuckDB memory_limit, e.g. 4GB (default: DuckDB's, 80%% of RAM)"
    )
    parser.add_argument("--temp-directory", default="", help="where DuckDB spills (default: <db>.tmp)")
    parser.add_argument(
        "--dbt-memory-limit", default="", help="another memory_limit for dbt only (default: --memory-limit)"
    )
    args = parser.parse_args()
    default = "default (80% of RAM)"
    print(
        f"DuckDB memory_limit: ingest {args.memory_limit or default}, "
        f"dbt {args.dbt_memory_limit or args.memory_limit or default}"
    )
    print(
        f"{'users':>9} {'items':>7} {'events':>11} {'simulate s':>10} {'ingest s':>9} {'dbt s':>8} "
        f"{'total s':>8} {'sim RSS MB':>10} {'py RSS MB':>9} {'dbt RSS MB':>10} {'db MB':>7}"
    )
    # a bar over the sizes on stderr (elapsed, time left); each row goes out through tqdm.write above it
    for n_users in tqdm(args.users, desc="sizes", unit="size"):
        n_items = max(500, n_users // 10)
        f = run_size(
            n_users, n_items, args.days, args.memory_limit, args.temp_directory, args.dbt_memory_limit
        )
        tqdm.write(
            f"{n_users:>9} {n_items:>7} {f['events']:>11} {f['simulate_s']:>10.1f} {f['ingest_s']:>9.1f} "
            f"{f['dbt_s']:>8.1f} {f['total_s']:>8.1f} {f['peak_rss_mb_simulate']:>10.0f} "
            f"{f['peak_rss_mb_python']:>9.0f} "
            f"{f['peak_rss_mb_dbt']:>10.0f} {f['db_mb']:>7.0f}"
        )
        sys.stdout.flush()  # tqdm.write does not flush: rows show as they come under make bench


if __name__ == "__main__":
    main()
