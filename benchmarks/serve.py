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
    nice -n 10 .venv/bin/python benchmarks/serve.py --items 100000     # -> reports/benchmarks/serve_100k.json

``--items N`` serves a simulator world with an N-item catalog instead of the pipeline's (built once under
``data/bench/serve_<N>items``, reused while its settings match): the same steps as the pipeline (snapshot,
validated ingest, ``dbt build``, two-tower profile model, ``retrieval_index`` artifact, ranker, full stack
registered as champion), with few epochs and few users, since serving cost depends on the catalog, not on how
well the models were trained. Item text embeddings there come from a hashed bag of words
(:class:`HashedTextEncoder`, 384 dimensions like MiniLM), because MiniLM encoded 7 to 12 items/s on this shared
2-core CPU (hours for 100k items); a request never runs the text encoder, so latency does not depend on it.
Before serving it measures the two-tower search on that catalog: recall@10 of the faiss ANN against exact
search, and the latency of one query, exact and ANN (rows with scenario ``ann_search``). Only ``recommend`` is
measured there (there is no generator in that world).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
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

WORLD_USERS = 5_000
WORLD_DAYS = 7
# Bumped when the saved models of an older world no longer load or were built differently (3: the two-tower's
# layers changed in the merge of wt-ranker; 4-5: the faiss probe count is calibrated at build on users' vectors): a
# world whose data settings match but whose models are older keeps its data and retrains them.
MODELS_FORMAT = 5
DATA_STEPS = ("snapshot + ingest", "dbt build")


class HashedTextEncoder:
    """Text embeddings without a network: each word gets a fixed random vector (seeded by its hash); an item's
    embedding is the normalized mean of its words' vectors. A stand-in for MiniLM in the large benchmark world.
    """

    name = "hashed-bag-of-words"
    version = "1"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.n_encoded = 0
        self._words: dict[str, np.ndarray] = {}

    def _word(self, word: str) -> np.ndarray:
        vec = self._words.get(word)
        if vec is None:
            seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            vec = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            self._words[word] = vec
        return vec

    def encode(self, texts: list[str]) -> np.ndarray:
        """(texts, dim) unit vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", text.lower())
            if words:
                out[row] = np.mean([self._word(w) for w in words], axis=0)
        self.n_encoded += len(texts)
        return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)


def world_env(home: Path, n_items: int, n_users: int, n_days: int) -> dict[str, str]:
    """The settings of the benchmark world: its home, its simulator size and few epochs."""
    return {
        "RECGEN_HOME": str(home),
        "RECGEN_DUCKDB_PATH": str(home / "recgen.duckdb"),
        "RECGEN_SIMULATOR__N_USERS": str(n_users),
        "RECGEN_SIMULATOR__N_ITEMS": str(n_items),
        "RECGEN_SIMULATOR__N_DAYS": str(n_days),
        "RECGEN_PROFILE__EPOCHS": "1",
        "RECGEN_RANKER__EPOCHS": "1",
        "RECGEN_DUCKDB_MEMORY_LIMIT": os.environ.get("RECGEN_DUCKDB_MEMORY_LIMIT", "4GB"),
        "DBT_TARGET_PATH": str(home / "dbt_target"),
        "DBT_LOG_PATH": str(home / "dbt_logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def build_world_here(ann_users: int = 300, models_only: bool = False) -> None:
    """In this process (settings from the environment): the pipeline's model steps, then the ANN figures.

    ``models_only`` keeps the world's raw data, warehouse and item embeddings and trains the models again (into
    a fresh registry): what a world needs when only the model code changed since it was built.
    """
    import pandas as pd
    import torch

    from models import evaluation as training
    from models.data import warehouse
    from models.data.ingest import ingest_snapshot
    from models.data.sources import write_raw_snapshot
    from models.encoders import embed_items, write_item_embeddings
    from models.recommender import TwoTowerRecommender
    from models.retrieval.index import FaissIndex
    from models.torch_utils import limit_cpu_threads

    settings = get_settings()
    settings.ensure_dirs()
    limit_cpu_threads(settings.torch_threads)
    steps: dict[str, float] = {}

    def step(name: str, started: float) -> None:
        steps[name] = time.perf_counter() - started
        print(f"world: {name} {steps[name]:.1f} s", flush=True)

    manifest_path = settings.home / "bench_world.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if models_only:
        steps.update({k: v for k, v in previous.get("steps_s", {}).items() if k in DATA_STEPS})
    else:
        t = time.perf_counter()
        files = write_raw_snapshot(settings)
        with warehouse.connect(settings.database, config=warehouse.duckdb_config(settings)) as con:
            ingest_snapshot(con, files, source="simulator", replace=True)
        step("snapshot + ingest", t)
        t = time.perf_counter()
        dbt_vars = json.dumps(
            {"valid_days": settings.split.valid_days, "test_days": settings.split.test_days}
        )
        subprocess.run(
            [str(Path(sys.prefix) / "bin" / "dbt"), "build", "--quiet", "--vars", dbt_vars, "--profiles-dir", ".",
             "--project-dir", "."],
            cwd=ROOT / "dbt_project", env={**os.environ, **warehouse.dbt_env(settings)}, check=True,
        )  # fmt: skip
        step("dbt build", t)
    t = time.perf_counter()
    with warehouse.connect(settings.database, config=warehouse.duckdb_config(settings)) as con:
        if not models_only:
            items = con.execute("select item_id, title, body, content_hash from marts.item_features").df()
            write_item_embeddings(con, embed_items(items, HashedTextEncoder()))  # type: ignore[arg-type]
        frames = training.read_marts(con)
        embeddings = training.read_item_embeddings(con)
    data = training.build_data(frames, embeddings)
    step("item embeddings + marts", t)
    registry = ModelRegistry.from_settings(settings)
    t = time.perf_counter()
    encoder, _ = training.fit_profile_model(settings, data)
    registry.register("profile_model", encoder.save, metrics={}, config={"bench": "serve"})
    step("profile model", t)
    t = time.perf_counter()
    index = training.build_retrieval(settings, data, encoder)
    # as the retrieval_index asset does: the probe count is calibrated on users' vectors (other users than the
    # ones the recall below is measured on)
    two_tower = TwoTowerRecommender(encoder, settings.profile.cold_start_interest_weight).fit(data)
    with_history = [u for u in data.users["user_id"] if u in two_tower.store.offsets]
    index.ensure_ann(two_tower.user_vectors(with_history[ann_users : ann_users + 256]))
    retrieval = registry.register("retrieval_index", index.save, metrics={}, config={"bench": "serve"})
    step("retrieval_index", t)
    t = time.perf_counter()
    ranker, _ = training.fit_ranker(settings, data, encoder)
    step("ranker", t)
    t = time.perf_counter()
    served = training.full_stack(settings, encoder, ranker, 1.0).fit(data)
    artifact = registry.register(
        "full_stack", served.save, metrics={"ndcg@10": 0.0}, config={"bench": "serve"}
    )
    registry.promote_if_better("full_stack", artifact.version)
    step("full stack", t)

    # The two-tower search on this catalog: exact against the faiss ANN, for users of the served model.
    users = with_history[:ann_users]
    vectors = two_tower.user_vectors(users)
    seen = data.exclusions(users)
    k = 10
    exact_items = index.search_exact(vectors, k, seen)[1]

    def per_query_ms(search) -> float:
        times = []
        for row in range(len(users)):
            started = time.perf_counter()
            search(vectors[row : row + 1], [seen[row]])
            times.append((time.perf_counter() - started) * 1000)
        return float(np.percentile(times, 50)), float(np.percentile(times, 99))

    rows = []
    exact_p50, exact_p99 = per_query_ms(
        lambda v, s: index.search_exact(v, settings.retrieval.n_candidates, s)
    )
    ann = (
        index.ann
        if index.ann is not None
        else FaissIndex.build(index.space, target_recall=index.ann_target_recall)
    )
    base_probe = ann.n_probe
    for n_probe in sorted({8, 16, 32, base_probe, 128}):
        ann.n_probe = n_probe
        approx = ann.search(vectors, k, seen)[1]
        recall = np.mean(
            [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(approx, exact_items, strict=True)]
        )
        p50, p99 = per_query_ms(lambda v, s: ann.search(v, settings.retrieval.n_candidates, s))
        rows.append({
            "scenario": "ann_search", "items": index.n_items, "n_lists": int(ann.index.nlist), "n_probe": n_probe,
            "served_default": n_probe == base_probe, "recall@10_vs_exact": float(recall),
            "ann_p50_ms": p50, "ann_p99_ms": p99, "exact_p50_ms": exact_p50, "exact_p99_ms": exact_p99,
            "users": len(users), "top_n": settings.retrieval.n_candidates,
        })  # fmt: skip
        print(
            f"ann_search items={index.n_items} lists={ann.index.nlist} probe={n_probe:<4} "
            f"recall@10 {recall:.4f}  ann p50 {p50:.2f} ms p99 {p99:.2f} ms  exact p50 {exact_p50:.2f} ms "
            f"p99 {exact_p99:.2f} ms",
            flush=True,
        )
    ann.n_probe = base_probe
    manifest = {
        "models_format": MODELS_FORMAT, "models_rebuilt": models_only,
        "settings": world_key(settings.simulator.n_items, settings.simulator.n_users, settings.simulator.n_days),
        "full_stack": artifact.version, "retrieval_index": retrieval.version, "uses_ann": index.uses_ann,
        "steps_s": steps, "ann": rows, "torch_threads": torch.get_num_threads(),
        "events": int(pd.read_parquet(settings.raw_dir / "events").shape[0]),
    }  # fmt: skip
    manifest_path.write_text(json.dumps(manifest, indent=2))


def world_key(n_items: int, n_users: int, n_days: int) -> dict[str, int]:
    """What a reusable benchmark world is made of."""
    return {"n_items": n_items, "n_users": n_users, "n_days": n_days, "format": 2}


def ensure_world(n_items: int, n_users: int, n_days: int) -> tuple[dict[str, str], dict]:
    """The world's environment and manifest; built (in a subprocess) unless one with these settings exists."""
    home = (ROOT / "data" / "bench" / f"serve_{n_items}items").resolve()
    env = world_env(home, n_items, n_users, n_days)
    manifest_path = home / "bench_world.json"
    build_env = {**env, "RECGEN_RETRIEVAL__ANN_THRESHOLD_ITEMS": str(max(1, n_items - 1))}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == world_key(n_items, n_users, n_days):
            if manifest.get("models_format", 1) == MODELS_FORMAT:
                print(f"reusing the benchmark world {home}")
                return env, manifest
            print(f"benchmark world {home}: same data, older models: training them again", flush=True)
            shutil.rmtree(home / "artifacts", ignore_errors=True)  # a fresh registry
            subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--build-world-here", "--models-only"],
                cwd=ROOT, env={**os.environ, **build_env}, check=True,
            )  # fmt: skip
            return env, json.loads(manifest_path.read_text())
    print(
        f"building the benchmark world {home} ({n_items} items, {n_users} users, {n_days} days)", flush=True
    )
    shutil.rmtree(home, ignore_errors=True)  # a fresh registry: its artifacts are the served champion's
    # built with the ANN on, so the retrieval_index artifact carries its faiss index; serving decides to use it
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--build-world-here"],
        cwd=ROOT, env={**os.environ, **build_env}, check=True,
    )  # fmt: skip
    return env, json.loads(manifest_path.read_text())


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
def bentoml_server(
    port: int, log_path: Path, ready_timeout_s: float = 600.0, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`bentoml serve` in its own process group on 127.0.0.1:``port``, once ``/readyz`` answers; yields the URL
    and the process (``benchmarks/soak.py`` finds its worker under it); stopped with SIGTERM on exit."""
    exe = Path(sys.prefix) / "bin" / "bentoml"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(exe), "serve", "bentos.service:RecgenService", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or settings_env()), "BENTOML_DO_NOT_TRACK": "true"},
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
        yield url, proc
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


@contextmanager
def serve(
    port: int, log_path: Path, ready_timeout_s: float = 600.0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`bentoml serve` on ``port`` (see ``bentoml_server``); yields its URL."""
    with bentoml_server(port, log_path, ready_timeout_s, env) as (url, _):
        yield url


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


def sample_items(n: int = 200) -> list[str]:
    """Items of the served champion (from its artifact)."""
    import pandas as pd

    champion = ModelRegistry.from_settings(get_settings()).champion("full_stack")
    assert champion is not None
    items = pd.read_parquet(champion.path / "items.parquet", columns=["item_id"])["item_id"].astype(str)
    return items.head(n).tolist()


def run_copy_scenario(
    url: str, users: list[str], items: list[str], n_requests: int, concurrency: int
) -> dict[str, object]:
    """``n_requests`` /generate blurbs for (user, item) pairs not asked before, ``concurrency`` at a time.

    The copy latency of the default generator as a client sees it: pairs are fresh, so copy is written now
    unless a user of the same segment was served that item's blurb before (counted in ``copy_cached_share``).
    """
    client = httpx.Client(base_url=url, timeout=120.0, limits=httpx.Limits(max_connections=concurrency))

    def call(i: int) -> tuple[float, int, int, int]:
        body = {"user_id": users[i % len(users)], "item_id": items[(i * 7) % len(items)], "task": "blurb"}
        started = time.perf_counter()
        try:
            resp = client.post("/generate", json=body)
        except httpx.HTTPError:
            return time.perf_counter() - started, 1, 0, 0
        elapsed = time.perf_counter() - started
        if resp.status_code != 200:
            return elapsed, 1, 0, 0
        content = resp.json()["content"]
        return elapsed, 0, int(content["cached"]), int(not content["faithful"])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(call, range(n_requests)))
    wall = time.perf_counter() - started
    client.close()
    lat = np.asarray([r[0] * 1000 for r in results])
    return {
        "scenario": "generate (copy)",
        "concurrency": concurrency,
        "requests": n_requests,
        "errors": sum(r[1] for r in results),
        "throughput_rps": n_requests / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "copy_cached_share": sum(r[2] for r in results) / n_requests,
        "unfaithful": sum(r[3] for r in results),
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
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=None, help="default 1 4 16 (1 16 with --items)"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--items", type=int, default=None, help="serve a simulator world with this many items"
    )
    parser.add_argument("--world-users", type=int, default=WORLD_USERS, help="users of the --items world")
    parser.add_argument("--world-days", type=int, default=WORLD_DAYS, help="days of the --items world")
    parser.add_argument(
        "--ann-threshold", type=int, default=None,
        help="RECGEN_RETRIEVAL__ANN_THRESHOLD_ITEMS for the server (default: the settings')",
    )  # fmt: skip
    parser.add_argument(
        "--copy",
        action="store_true",
        help="also /generate copy latency at concurrency 1 and 16 (default world)",
    )
    parser.add_argument("--build-world-here", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the figures here (with --items default reports/benchmarks/serve_<N>.json)",
    )
    args = parser.parse_args()
    if args.build_world_here:
        build_world_here(models_only=args.models_only)
        return

    env: dict[str, str] | None = None
    figures: list[dict[str, object]] = []
    scenarios = (False, True)
    if args.items:
        env, manifest = ensure_world(args.items, args.world_users, args.world_days)
        os.environ.update(env)  # this process reads the world's registry too
        figures += manifest["ann"]
        for row in manifest["ann"]:  # measured when the world was built (its faiss index is the one served)
            print(
                f"ann_search items={row['items']} lists={row['n_lists']} probe={row['n_probe']:<4} "
                f"recall@10 vs exact {row['recall@10_vs_exact']:.4f}  ann p50 {row['ann_p50_ms']:.2f} ms  "
                f"exact p50 {row['exact_p50_ms']:.2f} ms"
                + ("  (served)" if row.get("served_default") else ""),
                flush=True,
            )
        scenarios = (False,)  # no generator in the benchmark world
        label = f"{args.items // 1000}k" if args.items % 1000 == 0 else str(args.items)
        args.json = args.json or ROOT / "reports" / "benchmarks" / f"serve_{label}.json"
    concurrency_levels = args.concurrency or ([1, 16] if args.items else [1, 4, 16])
    if args.ann_threshold is not None:
        os.environ["RECGEN_RETRIEVAL__ANN_THRESHOLD_ITEMS"] = str(args.ann_threshold)
        env = {**(env or settings_env()), "RECGEN_RETRIEVAL__ANN_THRESHOLD_ITEMS": str(args.ann_threshold)}
    threshold = get_settings().retrieval.ann_threshold_items

    users = sample_users()
    offset = 0

    def next_users(n: int) -> list[str]:
        """A slice of users no earlier scenario used (while there are enough), so copy is not all cached."""
        nonlocal offset
        start = offset % len(users)
        offset += n
        return (users[start:] + users[:start])[:n] if n <= len(users) else users

    def server_cpu_s(proc: subprocess.Popen[bytes] | None) -> float | None:
        """CPU seconds (user + system) used so far by `bentoml serve` and its workers (None with --url)."""
        if proc is None:
            return None
        total = 0.0
        root = psutil.Process(proc.pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def measure(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
        health = httpx.post(f"{url}/health", timeout=30).json()
        print(
            f"server {url}: device {health['device']}, models {health['model_versions']}, counts {health.get('counts')}"
        )
        for with_content in scenarios:
            n = args.requests if not with_content else (args.content_requests or args.requests)
            # a few calls first, so one-off costs (first torch call, lazy imports) are not in the figures
            run_scenario(url, next_users(8), min(8, n), 1, with_content, args.k)
            for concurrency in concurrency_levels:
                load_before = os.getloadavg()[0]
                cpu_before = server_cpu_s(proc)
                f = run_scenario(url, next_users(n), n, concurrency, with_content, args.k)
                cpu_after = server_cpu_s(proc)
                # what one request cost the server's processes in CPU time (HTTP, BentoML, the models)
                f["server_cpu_ms_per_request"] = (
                    None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) * 1000 / n
                )
                # the machine may be shared: the 1-minute load average before and after the row
                f["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                f["torch_threads"] = os.environ.get("RECGEN_TORCH_THREADS")
                f["items"] = int(health.get("counts", {}).get("items", 0)) or args.items
                f["search"] = "ann (faiss)" if f["items"] > threshold else "exact"
                f["model_versions"] = health["model_versions"]
                figures.append(f)
                print(
                    f"{f['scenario']:<18} c={concurrency:<3} n={n:<5} items={f['items']} {f['search']} errors={f['errors']:<4} "
                    f"{f['throughput_rps']:8.1f} req/s  p50 {f['p50_ms']:8.1f} ms  p95 {f['p95_ms']:8.1f} ms  "
                    f"p99 {f['p99_ms']:8.1f} ms  load {f['load_avg_1m'][0]:.1f}->{f['load_avg_1m'][1]:.1f}"
                    + (
                        f"  server cpu {f['server_cpu_ms_per_request']:.1f} ms/req"
                        if f["server_cpu_ms_per_request"] is not None
                        else ""
                    )
                    + (f"  copy from cache {f['content_cached_share']:.0%}" if with_content else ""),
                    flush=True,
                )

    def measure_copy(url: str) -> None:
        items = sample_items()
        run_copy_scenario(url, next_users(8), items, 8, 1)  # warm-up
        for concurrency in (1, 16):
            n = args.content_requests or args.requests
            load_before = os.getloadavg()[0]
            f = run_copy_scenario(url, next_users(n), items, n, concurrency)
            f["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            figures.append(f)
            print(
                f"{f['scenario']:<18} c={concurrency:<3} n={n:<5} errors={f['errors']:<4} "
                f"{f['throughput_rps']:8.1f} req/s  p50 {f['p50_ms']:8.1f} ms  p95 {f['p95_ms']:8.1f} ms  "
                f"p99 {f['p99_ms']:8.1f} ms  copy from cache {f['copy_cached_share']:.0%}  "
                f"unfaithful {f['unfaithful']}  load {f['load_avg_1m'][0]:.1f}->{f['load_avg_1m'][1]:.1f}",
                flush=True,
            )

    if args.copy and args.items:
        raise SystemExit("--copy measures the default world's generator; the --items world has none")
    if args.url:
        measure(args.url.rstrip("/"))
        if args.copy:
            measure_copy(args.url.rstrip("/"))
    else:
        log_path = get_settings().reports_dir.resolve() / "serve_bench_server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with bentoml_server(free_port(), log_path, env=env) as (url, proc):
            measure(url, proc)
            if args.copy:
                measure_copy(url)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
