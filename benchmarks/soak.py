"""A bounded soak of the recgen service: mixed recommend / feedback traffic against a real `bentoml serve`.

Starts `bentoml serve bentos.service:RecgenService` on a free loopback port (models from the settings:
RECGEN_HOME, default ./data, after `make run`), warms it up, then sends a fixed number of requests at a fixed
concurrency: ``--feedback-share`` of them are feedback batches of 3 events with client event_ids (every 10th of
those is sent twice, as a retry, and must come back as duplicates), the rest recommendations for random users.
Prints errors (any non-200, any transport error, a retry not answered as duplicates), p50/p95/p99 latency per
endpoint, and the worker's RSS after the warm-up, at the end and its peak (sampled every 0.2 s); the run fails
(exit code 1) when there was an error or the RSS grew by more than ``--rss-bound-mb``. Loopback only; nothing
runs past the request count. With RECGEN_SERVING__API_KEYS set, its first key is sent. Usage:

    .venv/bin/python benchmarks/soak.py
    .venv/bin/python benchmarks/soak.py --requests 4000 --concurrency 16 --rss-bound-mb 64 --json reports/soak.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serve import bentoml_server, free_port, settings_env  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402
from models.settings import get_settings  # noqa: E402

WORKER_MODULE = "_bentoml_impl.worker.service"  # how BentoML 1.4 starts an API worker process


@contextmanager
def serve(log_path: Path, ready_timeout_s: float = 240.0) -> Iterator[tuple[str, psutil.Process]]:
    """`bentoml serve` on a free loopback port (``benchmarks/serve.py: bentoml_server``); yields the URL and the
    API worker process whose RSS the soak follows."""
    with bentoml_server(free_port(), log_path, ready_timeout_s, settings_env()) as (url, proc):
        workers = [
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if WORKER_MODULE in " ".join(p.cmdline())
        ]
        if len(workers) != 1:
            raise SystemExit(f"expected one API worker under bentoml serve, found {len(workers)}")
        yield url, workers[0]


def catalog() -> tuple[list[str], list[str]]:
    """Users and items of the registry's champion (what the service serves)."""
    champion = ModelRegistry.from_settings(get_settings()).load_champion("full_stack")
    users = pd.read_parquet(champion.path / "users.parquet")["user_id"].astype(str).tolist()
    items = pd.read_parquet(champion.path / "items.parquet")["item_id"].astype(str).tolist()
    return users, items


class RssSampler:
    """The worker's resident memory, sampled in a thread until stopped (bounded by the run)."""

    def __init__(self, process: psutil.Process, every_s: float = 0.2) -> None:
        self.process, self.every_s = process, every_s
        self.peak = 0
        self.timeline: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.wait(self.every_s):
            rss = self.rss()
            self.peak = max(self.peak, rss)
            self.timeline.append((time.perf_counter() - started, rss))

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 in milliseconds (NaN when empty)."""
    if not values:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(np.array(values) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2)}


def _plan(
    n: int, tag: str, rng: random.Random, users: list[str], items: list[str], args: argparse.Namespace
) -> list[tuple[str, dict, bool]]:
    """(endpoint, body, is a retry) for ``n`` requests, decided up front: the same load for one seed."""
    plan: list[tuple[str, dict, bool]] = []
    n_feedback = 0
    for i in range(n):
        if rng.random() < args.feedback_share:
            n_feedback += 1
            user = rng.choice(users)
            events = [
                {"event_id": f"soak-{tag}-{i}-{j}", "event_type": "click", "user_id": user,
                 "item_id": rng.choice(items), "request_id": f"soak-{tag}-{i}", "position": j}
                for j in range(3)
            ]  # fmt: skip
            plan.append(("feedback", {"events": events}, False))
            if n_feedback % 10 == 0:
                plan.append(("feedback", {"events": events}, True))  # a retry of the same batch
        else:
            plan.append(("recommend", {"user_id": rng.choice(users), "k": args.k}, False))
    return plan


def run(url: str, worker: psutil.Process, args: argparse.Namespace) -> dict[str, object]:
    """Warm up, then the fixed mixed load; returns the figures."""
    users, items = catalog()
    keys = get_settings().serving.api_keys
    headers = {"authorization": f"Bearer {keys[0].get_secret_value()}"} if keys else {}
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:8]
    warm = _plan(args.warmup, f"warm-{run_id}", rng, users, items, args)
    plan = _plan(args.requests, run_id, rng, users, items, args)
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, headers=headers, timeout=60)
        return local.client

    def call(step: tuple[str, dict, bool]) -> tuple[str, float, str | None]:
        kind, body, retry = step
        started = time.perf_counter()
        try:
            resp = client().post(f"/{kind}", json=body)
        except httpx.HTTPError as exc:
            return kind, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        if resp.status_code != 200:
            return kind, elapsed, f"{resp.status_code} {resp.text[:200]}"
        if kind == "feedback":
            answer = resp.json()
            # a retry may run before its first send was answered: then one of the two is new, the other not
            if answer["new"] + answer["duplicates"] != len(body["events"]):
                return kind, elapsed, f"feedback answer does not add up: {answer}"
        return kind, elapsed, None

    with ThreadPoolExecutor(args.concurrency) as pool:
        warm_errors = [e for _, _, e in pool.map(call, warm) if e]
    rss_start = worker.memory_info().rss
    started = time.perf_counter()
    with RssSampler(worker) as sampler, ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(call, plan))
    seconds = time.perf_counter() - started
    rss_end = worker.memory_info().rss
    counts = httpx.post(f"{url}/health", headers=headers, timeout=30).json()["counts"]
    errors = [f"{kind}: {error}" for kind, _, error in results if error]
    errors += [f"warm-up: {e}" for e in warm_errors]
    expected_duplicates = sum(3 for _, _, retry in warm + plan if retry)
    if counts.get("feedback_duplicates") != expected_duplicates:
        errors.append(
            f"feedback: {counts.get('feedback_duplicates')} duplicates, {expected_duplicates} resent"
        )
    latency = {
        kind: percentiles([t for k, t, e in results if k == kind and not e])
        for kind in ("recommend", "feedback")
    }
    growth_mb = (rss_end - rss_start) / 2**20
    return {
        "requests": len(plan),
        "concurrency": args.concurrency,
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(plan) / seconds, 1),
        "errors": len(errors),
        "first_errors": errors[:5],
        "latency": latency,
        "overall": percentiles([t for _, t, e in results if not e]),
        "feedback_batches": sum(1 for k, _, _ in plan if k == "feedback"),
        "feedback_duplicates_reported": counts.get("feedback_duplicates"),
        "feedback_duplicates_expected": expected_duplicates,
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_peak_mb": round(sampler.peak / 2**20, 1),
        "rss_quarters_mb": [
            round(sampler.timeline[q * len(sampler.timeline) // 4][1] / 2**20, 1) for q in (1, 2, 3)
        ]
        if len(sampler.timeline) >= 4
        else [],
        "rss_growth_mb": round(growth_mb, 1),
        "rss_bound_mb": args.rss_bound_mb,
        "rss_bound_held": growth_mb <= args.rss_bound_mb,
    }


def main() -> None:
    """Parse the arguments, start the server, run the soak and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests after the warm-up (fixed)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--feedback-share", type=float, default=0.3)
    parser.add_argument(
        "--warmup", type=int, default=500, help="requests of the same mix and concurrency before RSS is read"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rss-bound-mb", type=float, default=64.0, help="largest RSS growth that passes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=Path("/tmp/recgen-soak-serve.log"))
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with serve(args.log) as (url, worker):
        print(
            f"serving on {url}, worker pid {worker.pid}; {args.requests} requests at concurrency {args.concurrency}"
        )
        figures = run(url, worker, args)
    for kind, lat in figures["latency"].items():  # type: ignore[union-attr]
        print(f"{kind:>10}: p50 {lat['p50_ms']} ms  p95 {lat['p95_ms']} ms  p99 {lat['p99_ms']} ms")
    overall = figures["overall"]
    print(
        f"{figures['requests']} requests in {figures['seconds']} s ({figures['requests_per_s']}/s), "
        f"errors {figures['errors']}, overall p99 {overall['p99_ms']} ms"  # type: ignore[index]
    )
    print(
        f"feedback: {figures['feedback_batches']} batches, duplicates reported {figures['feedback_duplicates_reported']}"
        f" (retries sent: {figures['feedback_duplicates_expected']} events)"
    )
    print(
        f"worker RSS: {figures['rss_start_mb']} MB after warm-up, {figures['rss_end_mb']} MB at the end, "
        f"peak {figures['rss_peak_mb']} MB (at 1/4, 1/2, 3/4 of the run: {figures['rss_quarters_mb']} MB); growth {figures['rss_growth_mb']} MB, bound {args.rss_bound_mb} MB: "
        + ("held" if figures["rss_bound_held"] else "EXCEEDED")
    )
    for error in figures["first_errors"]:  # type: ignore[union-attr]
        print("error:", error)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    sys.exit(0 if figures["errors"] == 0 and figures["rss_bound_held"] else 1)


if __name__ == "__main__":
    main()
