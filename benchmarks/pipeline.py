"""Data-layer cost at growing simulator sizes: simulate -> Parquet -> validated ingest -> dbt build.

Prints wall time per stage and peak resident memory for each size, each size in a fresh process and a fresh
DuckDB file, so the growth of cost with size is visible. Usage:

    .venv/bin/python benchmarks/pipeline.py                 # 10k, 100k, 1M users
    .venv/bin/python benchmarks/pipeline.py --users 10000 100000
    .venv/bin/python benchmarks/pipeline.py --users 100000 --memory-limit 4GB   # DuckDB memory_limit
    nice -n 10 .venv/bin/python benchmarks/pipeline.py --users 1000000 --memory-limit 4GB \
        --home data/bench/pipeline --json benchmarks/results/pipeline_1m.json

``--memory-limit`` sets ``RECGEN_DUCKDB_MEMORY_LIMIT`` (settings.duckdb_memory_limit) for the ingest connection
and for dbt's profile (``--dbt-memory-limit`` gives dbt another one); DuckDB spills past it to ``<db>.tmp`` (or
``--temp-directory``), at most ``--max-temp-directory-size`` (settings.duckdb_max_temp_directory_size: a query
that needs more fails). The temp directory's size is sampled every few seconds during ingest and dbt ("temp
peak"), and dbt's per-node times and statuses (its ``run_results.json``) go into ``--json``, also when the
build fails. Simulation, ingest and dbt each run in their own process (started from this small one),
so "sim RSS", "ingest RSS" and "dbt RSS" are each stage's own peak resident memory. ``--json`` writes the rows,
with the 1-minute load average before and after each stage (the machine may be shared). ``--home`` keeps each
size's snapshot in ``HOME/<users>`` and reuses it on the next run (its simulate figures then read "reused");
the DuckDB file is always new.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "dbt")

SIMULATE = r"""
import json, os, resource, time
from pathlib import Path
from models.settings import get_settings
from models.data.sources import write_raw_snapshot

s = get_settings()
s.ensure_dirs()
manifest = Path(s.raw_dir) / "manifest.json"
wanted = json.loads(json.dumps(s.simulator.model_dump(), default=str))
if os.environ.get("BENCH_REUSE") and manifest.exists() and json.loads(manifest.read_text())["simulator"] == wanted:
    # --home: this size's snapshot is already there (same simulator settings); its time is not measured again
    print("RESULT " + json.dumps({"simulate_s": None, "peak_rss_mb_simulate": None, "snapshot_reused": True}))
else:
    t0 = time.perf_counter(); write_raw_snapshot(s); t1 = time.perf_counter()
    print("RESULT " + json.dumps({
        "simulate_s": t1 - t0, "peak_rss_mb_simulate": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "snapshot_reused": False}))
"""

# Ingest in its own process, so its peak RSS is its own (not the simulator's): the snapshot's parts are
# validated and committed one at a time (models.data.ingest).
INGEST = r"""
import json, logging, os, resource, time
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # its step lines go to stderr
from pathlib import Path
from models.settings import get_settings
from models.data.ingest import ingest_snapshot
from models.data import warehouse

s = get_settings()
raw = Path(s.raw_dir)
files = {name: sorted((raw / name).glob("part-*.parquet")) for name in ("users", "items", "events")}
t0 = time.perf_counter()
with warehouse.connect(s.database, config=warehouse.duckdb_config(s)) as con:
    report = ingest_snapshot(con, files, source="simulator")
    memory_limit = con.execute("select current_setting('memory_limit')").fetchone()[0]
t1 = time.perf_counter()
dbt_env = warehouse.dbt_env(s)
if os.environ.get("BENCH_DBT_MEMORY_LIMIT"):
    dbt_env["RECGEN_DUCKDB_MEMORY_LIMIT"] = os.environ["BENCH_DBT_MEMORY_LIMIT"]
print("RESULT " + json.dumps({
    "events": report.tables["events"].rows_clean, "parts": {k: len(v) for k, v in files.items()},
    "ingest_s": t1 - t0, "peak_rss_mb_ingest": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "ingest_memory_limit": memory_limit, "dbt_env": dbt_env,
    "dbt_vars": {"valid_days": s.split.valid_days, "test_days": s.split.test_days}}))
"""

# --stages without ingest: dbt's environment and vars for the warehouse an earlier --stages ingest left in --home
DBT_SETTINGS = r"""
import json, os
from models.settings import get_settings
from models.data import warehouse

s = get_settings()
dbt_env = warehouse.dbt_env(s)
if os.environ.get("BENCH_DBT_MEMORY_LIMIT"):
    dbt_env["RECGEN_DUCKDB_MEMORY_LIMIT"] = os.environ["BENCH_DBT_MEMORY_LIMIT"]
print("RESULT " + json.dumps({
    "dbt_env": dbt_env, "dbt_vars": {"valid_days": s.split.valid_days, "test_days": s.split.test_days}}))
"""


def _tree_mb(path: Path) -> float:
    """Total size of the files under ``path`` in MB (0 where it does not exist); files may vanish meanwhile."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total / 2**20


@contextlib.contextmanager
def temp_peak(path: Path, figures: dict, key: str, every_s: float = 5.0):
    """Sample the size of DuckDB's temp directory ``path`` every ``every_s`` s; its peak MB into figures[key]."""
    stop = threading.Event()
    peak = [_tree_mb(path)]

    def sample() -> None:
        while not stop.wait(every_s):
            peak[0] = max(peak[0], _tree_mb(path))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        figures[key] = max(peak[0], _tree_mb(path))


def run_stage(code: str, env: dict[str, str], n_users: int, name: str) -> dict:
    """Run one stage's code in a fresh Python process; its RESULT line as a dict (with the load averages)."""
    load_before = os.getloadavg()[0]
    # stderr (the ingest's progress lines, tracebacks) goes straight through; stdout holds the RESULT line
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"size {n_users} failed (see its stderr above):\n{out.stdout[-2000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return {**json.loads(line.removeprefix("RESULT ")), f"load_{name}": [load_before, os.getloadavg()[0]]}


def dbt_nodes(target: Path) -> list[dict]:
    """Each node of dbt's last invocation (``target/run_results.json``): name, status, seconds, error message."""
    path = target / "run_results.json"
    if not path.exists():
        return []
    return [
        {
            "node": r["unique_id"],
            "status": r["status"],
            "s": round(r["execution_time"], 1),
            "message": (r.get("message") or "")[:500] if r["status"] in ("error", "fail") else None,
        }
        for r in json.loads(path.read_text())["results"]
    ]


def run_dbt(env: dict[str, str], dbt_env: dict[str, str], dbt_vars: dict[str, int]) -> dict:
    """`dbt build` in its own process, started from this small one; its time, its own peak RSS, its exit code.

    Started from the ingesting process, dbt's ru_maxrss would start at that process's peak (Linux carries
    the high-water mark of the spawning process over exec), hiding a dbt peak below the ingest one.
    """
    dbt = Path(sys.prefix) / "bin" / "dbt"
    args = ["build", "--quiet", "--vars", json.dumps(dbt_vars), "--profiles-dir", ".", "--project-dir", "."]
    target = Path(env["DBT_TARGET_PATH"])
    (target / "run_results.json").unlink(missing_ok=True)  # an earlier invocation's nodes are not this one's
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen([str(dbt), *args], cwd=ROOT / "dbt_project", env={**env, **dbt_env})
    _, status, usage = os.wait4(process.pid, 0)
    return {
        "dbt_s": time.perf_counter() - start,
        "dbt_exit": os.waitstatus_to_exitcode(status),
        "peak_rss_mb_dbt": usage.ru_maxrss / 1024,
        "load_dbt": [load_before, os.getloadavg()[0]],
        "dbt_nodes": dbt_nodes(target),
    }


def run_size(
    n_users: int,
    n_items: int,
    n_days: int,
    memory_limit: str = "",
    temp_directory: str = "",
    dbt_memory_limit: str = "",
    home_root: Path | None = None,
    on_stage: Callable[[dict], None] | None = None,
    stages: tuple[str, ...] = STAGES,
    max_temp_directory_size: str = "",
) -> dict[str, float]:
    """Run the data layer for one size in fresh processes and a fresh DuckDB file; return its figures.

    With ``home_root`` the size's home is ``home_root/<users>`` and is kept: its snapshot is reused when it was
    simulated with the same settings, and its DuckDB file is deleted first (ingest and dbt always start empty).
    ``stages`` without "ingest" keeps that DuckDB file instead and runs dbt on what an earlier ingest left there.
    """
    with contextlib.ExitStack() as stack:
        if home_root is None:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="recgen-bench-"))
        else:
            home = str((home_root / str(n_users)).resolve())
            Path(home).mkdir(parents=True, exist_ok=True)
            for leftover in [] if "ingest" not in stages else Path(home).glob("recgen.duckdb*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        env = {
            **os.environ,
            "RECGEN_DUCKDB_MEMORY_LIMIT": memory_limit,
            "RECGEN_DUCKDB_TEMP_DIRECTORY": temp_directory,
            "RECGEN_DUCKDB_MAX_TEMP_DIRECTORY_SIZE": max_temp_directory_size,
            "BENCH_DBT_MEMORY_LIMIT": dbt_memory_limit,
            "RECGEN_HOME": home,
            "RECGEN_DUCKDB_PATH": f"{home}/recgen.duckdb",
            "RECGEN_SIMULATOR__N_USERS": str(n_users),
            "RECGEN_SIMULATOR__N_ITEMS": str(n_items),
            "RECGEN_SIMULATOR__N_DAYS": str(n_days),
            "DBT_TARGET_PATH": f"{home}/dbt_target",
            "DBT_LOG_PATH": f"{home}/dbt_logs",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "BENCH_REUSE": "1" if home_root is not None else "",
        }
        start = time.perf_counter()
        report = on_stage or (lambda _: None)
        spill = Path(temp_directory or f"{env['RECGEN_DUCKDB_PATH']}.tmp")
        figures = run_stage(SIMULATE, env, n_users, "simulate")
        report({**figures, "unfinished": "ingest, dbt"})
        if "ingest" in stages:
            with temp_peak(spill, figures, "temp_peak_mb_ingest"):
                figures.update(run_stage(INGEST, env, n_users, "ingest"))
        else:
            if not Path(env["RECGEN_DUCKDB_PATH"]).exists():
                raise SystemExit(f"size {n_users}: no warehouse at {env['RECGEN_DUCKDB_PATH']} to run dbt on")
            figures.update(run_stage(DBT_SETTINGS, env, n_users, "settings"))
        dbt_env, dbt_vars = figures.pop("dbt_env"), figures.pop("dbt_vars")
        report({**figures, "unfinished": "dbt"})
        if "dbt" in stages:
            with temp_peak(spill, figures, "temp_peak_mb_dbt"):
                figures.update(run_dbt(env, dbt_env, dbt_vars))
            if figures["dbt_exit"] != 0:
                report(figures)
                failed = [n["node"] for n in figures["dbt_nodes"] if n["status"] in ("error", "fail")]
                raise SystemExit(f"size {n_users}: dbt build failed (exit {figures['dbt_exit']}): {failed}")
        figures["db_mb"] = Path(env["RECGEN_DUCKDB_PATH"]).stat().st_size / 2**20
        figures["total_s"] = time.perf_counter() - start
        return figures


def write_json(path: Path | None, rows: list[dict]) -> None:
    """Write the rows to ``path`` (nothing without one)."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2))


def _write_partial(path: Path | None, rows: list[dict], size: dict, partial: dict) -> None:
    """Write the finished rows and this size's figures so far."""
    write_json(path, [*rows, {**size, **partial}])


def _num(value: float | None, digits: int = 1) -> str:
    """A figure for the table; 'reused' where the snapshot was not simulated in this run."""
    return "reused" if value is None else f"{value:.{digits}f}"


def _stage(figures: dict, key: str, digits: int = 1) -> str:
    """A stage's figure for the table; '-' where --stages left that stage out."""
    return _num(figures[key], digits) if key in figures else "-"


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
        "--max-temp-directory-size",
        default="",
        help="the most DuckDB spills there, e.g. 30GB (default: DuckDB's, 90%% of the free disk)",
    )
    parser.add_argument(
        "--dbt-memory-limit", default="", help="another memory_limit for dbt only (default: --memory-limit)"
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="keep each size's home in HOME/<users> and reuse its snapshot (default: a temporary folder)",
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="run only these after simulating; dbt alone needs --home and the warehouse an ingest left there",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every size's figures here")
    args = parser.parse_args()
    if "ingest" not in args.stages and args.home is None:
        parser.error("--stages dbt needs --home (the warehouse of an earlier --stages ingest)")
    default = "default (80% of RAM)"
    print(
        f"DuckDB memory_limit: ingest {args.memory_limit or default}, "
        f"dbt {args.dbt_memory_limit or args.memory_limit or default}; "
        f"max_temp_directory_size {args.max_temp_directory_size or 'default (90% of the free disk)'}"
    )
    print(
        f"{'users':>9} {'items':>7} {'events':>11} {'simulate s':>10} {'ingest s':>9} {'dbt s':>8} "
        f"{'total s':>8} {'sim RSS MB':>10} {'ingest RSS MB':>13} {'dbt RSS MB':>10} {'db MB':>7}"
    )
    rows = []
    # a bar over the sizes on stderr (elapsed, time left); each row goes out through tqdm.write above it
    for n_users in tqdm(args.users, desc="sizes", unit="size"):
        n_items = max(500, n_users // 10)
        f = run_size(
            n_users,
            n_items,
            args.days,
            args.memory_limit,
            args.temp_directory,
            args.dbt_memory_limit,
            args.home,
            # each stage's figures are written as they come, so a run stopped in dbt keeps its ingest figures
            functools.partial(_write_partial, args.json, list(rows), {"users": n_users, "items": n_items}),
            tuple(args.stages),
            args.max_temp_directory_size,
        )
        tqdm.write(
            f"{n_users:>9} {n_items:>7} {_stage(f, 'events', 0):>11} {_num(f['simulate_s']):>10} "
            f"{_stage(f, 'ingest_s'):>9} {_stage(f, 'dbt_s'):>8} {f['total_s']:>8.1f} "
            f"{_num(f['peak_rss_mb_simulate'], 0):>10} {_stage(f, 'peak_rss_mb_ingest', 0):>13} "
            f"{_stage(f, 'peak_rss_mb_dbt', 0):>10} {f['db_mb']:>7.0f}"
        )
        sys.stdout.flush()  # tqdm.write does not flush: rows show as they come under make bench
        rows.append({"users": n_users, "items": n_items, "days": args.days, **f})
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
