"""Load on the recgen service over loopback: throughput and latency of `recommend`, without and with copy.

A fixed number of requests per scenario at concurrency 1, 4 and 16 (bounded load: no open-ended soak);
prints requests/s, p50/p95/p99 latency, errors (any non-200 or transport error), and for the copy scenario
the share of copy served from the cache. Each scenario asks for users no earlier one used (as long as the
catalog has enough), so copy comes from the pipeline's cache or is written on demand, not from an earlier
scenario; users of one segment still share cached copy, as in production. Starts `bentoml serve bentos.service:RecgenService` on a free
loopback port for the run (models from the settings: RECGEN_HOME, default ./data, after `make run`), or
measures a server already running with --url. Usage:

    .venv/bin/python benchmarks/serve.py
    .venv/bin/python benchmarks/serve.py --requests 400 --concurrency 1 4 16 --json reports/serve_bench.json
    .venv/bin/python benchmarks/serve.py --url http://127.0.0.1:3001
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.registry import ModelRegistry  # noqa: E402
from models.settings import get_settings  # noqa: E402


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env() -> dict[str, str]:
    """RECGEN_HOME / RECGEN_DUCKDB_PATH as absolute paths, so the server reads what this script reads."""
    settings = get_settings()
    env = {"RECGEN_HOME": str(settings.home.resolve())}
    if settings.duckdb_path is not None:
        env["RECGEN_DUCKDB_PATH"] = str(settings.duckdb_path.resolve())
    return env


@contextmanager
def serve(port: int, log_path: Path, ready_timeout_s: float = 180.0) -> Iterator[str]:
    """`bentoml serve` in its own process group on ``port``; stopped with SIGTERM on exit."""
    exe = Path(sys.prefix) / "bin" / "bentoml"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(exe), "serve", "bentos.service:RecgenService", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **settings_env(), "BENTOML_DO_NOT_TRACK": "true"},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"bentoml serve exited with {proc.returncode}; log: {log_path}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"service not ready after {ready_timeout_s} s; log: {log_path}")
            time.sleep(0.25)
        yield url
    finally:
        # BentoML's workers run in sessions of their own: SIGTERM lets the arbiter stop them; if it hangs,
        # they are killed one by one (a signal to the arbiter's group would not reach them).
        workers = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for worker in psutil.wait_procs(workers, timeout=30)[1]:
            worker.kill()


def sample_users(n: int = 5000) -> list[str]:
    """Users of the served champion (from its artifact, so no warehouse lock is needed)."""
    import pandas as pd

    champion = ModelRegistry.from_settings(get_settings()).champion("full_stack")
    if champion is None:
        raise SystemExit("no champion recommender under the settings' RECGEN_HOME: run `make run` first")
    users = pd.read_parquet(champion.path / "users.parquet", columns=["user_id"])["user_id"].astype(str)
    return users.head(n).tolist()


def run_scenario(
    url: str, users: list[str], n_requests: int, concurrency: int, with_content: bool, k: int
) -> dict[str, float]:
    """``n_requests`` recommend calls, ``concurrency`` at a time, for ``users`` in turn; client-side latency."""
    client = httpx.Client(base_url=url, timeout=120.0, limits=httpx.Limits(max_connections=concurrency))
    latencies: list[float] = []
    errors = 0
    cached = generated = 0

    def call(i: int) -> tuple[float, int, int, int]:
        body = {"user_id": users[i % len(users)], "k": k, "with_content": with_content}
        started = time.perf_counter()
        try:
            resp = client.post("/recommend", json=body)
        except httpx.HTTPError:
            return time.perf_counter() - started, 1, 0, 0
        elapsed = time.perf_counter() - started
        if resp.status_code != 200:
            return elapsed, 1, 0, 0
        contents = [it["content"] for it in resp.json()["items"] if it.get("content")]
        hits = sum(1 for c in contents if c["cached"])
        return elapsed, 0, hits, len(contents) - hits

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for elapsed, err, hits, misses in pool.map(call, range(n_requests)):
            latencies.append(elapsed * 1000)
            errors += err
            cached += hits
            generated += misses
    wall = time.perf_counter() - started
    client.close()
    lat = np.asarray(latencies)
    return {
        "scenario": "recommend+content" if with_content else "recommend",
        "concurrency": concurrency,
        "requests": n_requests,
        "errors": errors,
        "throughput_rps": n_requests / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "content_cached_share": cached / (cached + generated) if cached + generated else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario and concurrency")
    parser.add_argument(
        "--content-requests", type=int, default=None, help="requests with copy (default: same)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    users = sample_users()
    figures: list[dict[str, float]] = []
    offset = 0

    def next_users(n: int) -> list[str]:
        """A slice of users no earlier scenario used (while there are enough), so copy is not all cached."""
        nonlocal offset
        start = offset % len(users)
        offset += n
        return (users[start:] + users[:start])[:n] if n <= len(users) else users

    def measure(url: str) -> None:
        health = httpx.post(f"{url}/health", timeout=30).json()
        print(f"server {url}: device {health['device']}, models {health['model_versions']}")
        for with_content in (False, True):
            n = args.requests if not with_content else (args.content_requests or args.requests)
            # a few calls first, so one-off costs (first torch call, lazy imports) are not in the figures
            run_scenario(url, next_users(8), min(8, n), 1, with_content, args.k)
            for concurrency in args.concurrency:
                figures.append(run_scenario(url, next_users(n), n, concurrency, with_content, args.k))
                f = figures[-1]
                print(
                    f"{f['scenario']:<18} c={concurrency:<3} n={n:<5} errors={f['errors']:<4} "
                    f"{f['throughput_rps']:8.1f} req/s  p50 {f['p50_ms']:8.1f} ms  p95 {f['p95_ms']:8.1f} ms  "
                    f"p99 {f['p99_ms']:8.1f} ms"
                    + (f"  copy from cache {f['content_cached_share']:.0%}" if with_content else ""),
                    flush=True,
                )

    if args.url:
        measure(args.url.rstrip("/"))
    else:
        log_path = get_settings().reports_dir.resolve() / "serve_bench_server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with serve(free_port(), log_path) as url:
            measure(url)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
