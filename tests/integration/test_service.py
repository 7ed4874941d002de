"""The BentoML service as users run it: `bentoml serve` over a real (tiny) pipeline output.

A session fixture runs the real Dagster assets on a tiny simulated dataset in a temporary RECGEN_HOME (ingest,
dbt, embeddings, training and evaluation with the champion promoted, the generator, one day of generated
copy). The server runs as its own process group on a free loopback port and is stopped with SIGTERM; the crash
test kills one with SIGKILL right after it acknowledged feedback and checks the inbox on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.orchestration.conftest import TINY_DATASET

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# Small enough to build in a few minutes on 2 cores, large enough that every split, model and copy exists.
TINY = {
    **TINY_DATASET,
    "RECGEN_PROFILE__EPOCHS": "2",
    "RECGEN_RANKER__EPOCHS": "2",
    "RECGEN_EVALUATION__BPR_EPOCHS": "2",
    "RECGEN_GENERATION__TRAIN_STEPS": "30",
    "RECGEN_GENERATION__N_LAYER": "2",
    "RECGEN_GENERATION__VOCAB_SIZE": "600",
    "RECGEN_GENERATION__MAX_USERS": "4",
    "RECGEN_GENERATION__MAX_NEW_TOKENS": "16",
    "RECGEN_GENERATION__TASKS": '["blurb"]',
    "RECGEN_TORCH_THREADS": "2",
    # the service needs a champion even where the full stack loses on this tiny world; one evaluation seed
    "RECGEN_EVALUATION__GATE_PROMOTION": "false",
    "RECGEN_EVALUATION__SEEDS": "[42]",
}

BUILD = textwrap.dedent(
    """
    import dagster as dg
    from orchestration.definitions import defs
    from orchestration.resources import RecgenResource, dbt_resource
    from orchestration.summary import latest_day

    # Assets only: the data and model quality gates (GX suites, "full stack beats baselines") have tests of
    # their own, and on a dataset this small a gate may legitimately stop the models the service needs.
    assets = list(defs.assets)
    resources = {"recgen": RecgenResource(), "dbt": dbt_resource()}
    serving_inputs = dg.AssetSelection.assets("recgen_bento").upstream() - dg.AssetSelection.assets("recgen_bento")
    result = dg.materialize(assets, selection=serving_inputs, resources=resources, raise_on_error=True)
    copy = dg.materialize(
        assets, selection=dg.AssetSelection.assets("generated_content"), partition_key=latest_day(),
        resources=resources, raise_on_error=True,
    )
    print("BUILT", result.success and copy.success)
    """
)


@dataclass
class Server:
    """A running `bentoml serve` and where it writes."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def post(self, endpoint: str, body: object = None, **kwargs: object) -> httpx.Response:
        if body is not None and "content" not in kwargs:
            kwargs["json"] = body
        return httpx.post(f"{self.url}/{endpoint}", timeout=120, **kwargs)  # type: ignore[arg-type]

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: dict[str, str], log: Path, ready_timeout_s: float = 240.0) -> Server:
    """`bentoml serve bentos.service:RecgenService` in its own process group; returns once /readyz says 200."""
    port = _free_port()
    exe = Path(sys.prefix) / "bin" / "bentoml"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", "bentos.service:RecgenService", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"bentoml serve exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise AssertionError(f"not ready after {ready_timeout_s} s:\n{server.log_tail()}")
        time.sleep(0.25)


def stop_server(server: Server, sig: signal.Signals = signal.SIGTERM) -> int:
    """Signal the server and wait; returns the exit code of `bentoml serve` (BentoML's arbiter).

    BentoML starts its workers in sessions of their own, so a signal to the arbiter's process group does not
    reach them: with SIGKILL every worker is killed too (right after the arbiter, which can then not start
    new ones); with SIGTERM the arbiter must stop its workers itself, and a worker left running is an error.
    """
    import psutil

    try:
        workers = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, sig)
    if sig == signal.SIGKILL:
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
    try:
        code = server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        code = server.proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=30)
    for worker in alive:
        worker.kill()
    assert not alive, f"{len(alive)} worker(s) still running after {sig.name}:\n{server.log_tail()}"
    return code


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a RECGEN_HOME holding a real tiny pipeline output (built once per session)."""
    base = tmp_path_factory.mktemp("service")
    home = base / "home"
    env = {
        **os.environ,
        **TINY,
        "RECGEN_HOME": str(home),
        "RECGEN_DUCKDB_PATH": str(home / "recgen.duckdb"),
        "RECGEN_REPORTS_DIR": str(base / "reports"),
        "DAGSTER_HOME": str(base / "dagster"),
        "BENTOML_HOME": str(base / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    (base / "dagster").mkdir()
    started = time.perf_counter()
    log = base / "build.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", BUILD],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or "BUILT True" not in text:
        # the end of the output is DuckDB's harmless "nanobind: leaked ..." noise: show the errors instead
        errors = [ln for ln in text.splitlines() if "Error" in ln or "error" in ln][-30:]
        raise AssertionError(f"pipeline build failed ({proc.returncode}), log {log}:\n" + "\n".join(errors))
    print(f"tiny pipeline built in {time.perf_counter() - started:.0f} s")
    return env


# The endpoint tests' server serves fairness re-ranked slates and refuses requests past a small concurrency limit
# (the crash test's server runs with the defaults: no re-ranking, serving.max_concurrency 64).
RERANK_STRENGTH = 2.0
MAX_CONCURRENCY = 3
SERVER_SETTINGS = {
    "RECGEN_MONITORING__FAIRNESS_RERANK": "true",
    "RECGEN_MONITORING__RERANK_STRENGTH": str(RERANK_STRENGTH),
    "RECGEN_SERVING__MAX_CONCURRENCY": str(MAX_CONCURRENCY),
}


@pytest.fixture(scope="module")
def server(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the endpoint tests; stopped with SIGTERM, which must end it cleanly."""
    srv = start_server({**service_env, **SERVER_SETTINGS}, tmp_path_factory.mktemp("serve") / "serve.log")
    yield srv
    code = stop_server(srv)
    assert code == 0, f"exit code {code} on SIGTERM:\n{srv.log_tail()}"


def _users_items(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Users and items of the served champion, read from its artifact (what the service loads)."""
    import pandas as pd

    from models.registry import ModelRegistry

    champion = ModelRegistry(Path(env["RECGEN_HOME"]) / "artifacts").load_champion("full_stack")
    users = pd.read_parquet(champion.path / "users.parquet")["user_id"].astype(str).tolist()
    items = pd.read_parquet(champion.path / "items.parquet")["item_id"].astype(str).tolist()
    return users, items


def _inbox_rows(env: dict[str, str]) -> list[dict]:
    inbox = Path(env["RECGEN_HOME"]) / "inbox" / "events"
    return [json.loads(line) for p in sorted(inbox.glob("*.jsonl")) for line in p.read_text().splitlines()]


# --- good input ----------------------------------------------------------------------------------------------


def test_health_names_models_device_and_counts(server: Server, service_env: dict[str, str]):
    resp = server.post("health")
    assert resp.status_code == 200
    body = resp.json()
    users, items = _users_items(service_env)
    assert body["status"] == "ok" and body["device"] in ("cpu", "cuda")
    assert body["model_versions"]["recommender"].startswith("full_stack:")
    assert "generator" in body["model_versions"]
    assert body["counts"]["users"] == len(users) and body["counts"]["items"] == len(items)
    # the day of copy the pipeline generated was copied into the service's cache at start
    assert body["counts"]["cached_copies"] > 0
    assert body["fairness_rerank_strength"] == RERANK_STRENGTH
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_recommend_known_user(server: Server, service_env: dict[str, str]):
    users, items = _users_items(service_env)
    resp = server.post("recommend", {"user_id": users[0], "k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user_id"] == users[0] and len(body["request_id"]) == 32
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 5 and len(set(ids)) == 5 and set(ids) <= set(items)
    assert [it["position"] for it in body["items"]] == [0, 1, 2, 3, 4]
    assert all(it["explanation"] and it["content"] is None for it in body["items"])
    assert body["explanation"] and body["profile"]["preferred_style"]
    assert body["model_version"].startswith("full_stack:")
    assert body["fairness_rerank_strength"] == RERANK_STRENGTH  # monitoring.fairness_rerank is on here


def test_recommend_anonymous_history_excludes_what_was_read(server: Server, service_env: dict[str, str]):
    _, items = _users_items(service_env)
    history = items[:3]
    resp = server.post("recommend", {"history": history, "k": 8})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user_id"] is None
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 8 and not set(ids) & set(history)
    assert body["profile"]["n_events"] == 3 and not body["profile"]["cold_start"]


def test_recommend_with_content_generates_then_serves_from_cache(server: Server, service_env: dict[str, str]):
    users, _ = _users_items(service_env)
    user = users[-1]
    first = server.post("recommend", {"user_id": user, "k": 4, "with_content": True, "style": "formal"})
    assert first.status_code == 200, first.text
    items = first.json()["items"]
    # serving.content_items (3) of the 4 items get copy; the 4th none
    contents = [it["content"] for it in items]
    assert all(c is not None for c in contents[:3]) and contents[3] is None
    for content in contents[:3]:
        assert content["text"].strip() and content["task"] == "blurb" and content["style"] == "formal"
        assert content["n_tokens"] <= 16  # generation.max_new_tokens of the tiny settings
    again = server.post("recommend", {"user_id": user, "k": 4, "with_content": True, "style": "formal"})
    assert [it["item_id"] for it in again.json()["items"]] == [it["item_id"] for it in items]
    # the same (item, segment, task, style) is now in the cache: same text, marked cached
    assert [it["content"]["cached"] for it in again.json()["items"][:3]] == [True, True, True]
    assert [it["content"]["text"] for it in again.json()["items"][:3]] == [c["text"] for c in contents[:3]]


def test_generate_for_a_pair(server: Server, service_env: dict[str, str]):
    users, items = _users_items(service_env)
    resp = server.post(
        "generate", {"user_id": users[1], "item_id": items[5], "task": "blurb", "style": "casual"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["item_id"] == items[5] and body["content"]["style"] == "casual"
    assert body["content"]["text"].strip() and body["content"]["model_version"]
    summary = server.post("generate", {"user_id": users[1], "item_id": items[5], "task": "summary"})
    assert summary.status_code == 200 and summary.json()["content"]["task"] == "summary"


def test_feedback_is_written_to_the_inbox_and_refreshes_the_history(
    server: Server, service_env: dict[str, str]
):
    users, items = _users_items(service_env)
    user = users[2]
    before = server.post("recommend", {"user_id": user, "k": 5}).json()
    shown = before["items"][0]["item_id"]
    other = next(i for i in items if i != shown)
    now = datetime.now(UTC)
    events = [
        {"event_type": "impression", "user_id": user, "item_id": shown, "request_id": before["request_id"],
         "position": 0, "ts": now.isoformat()},
        {"event_type": "click", "user_id": user, "item_id": shown, "request_id": before["request_id"],
         "position": 0, "ts": (now + timedelta(seconds=2)).isoformat()},
        {"event_type": "dwell", "user_id": user, "item_id": shown, "request_id": before["request_id"],
         "dwell_seconds": 42.5},
        {"event_type": "rating", "user_id": user, "item_id": other, "rating": 5},
    ]  # fmt: skip
    resp = server.post("feedback", {"events": events})
    assert resp.status_code == 200, resp.text
    # 4 events + an impression for the standalone rating (it came from no slate)
    assert resp.json() == {"accepted": 4, "rows_written": 5, "inbox_file": resp.json()["inbox_file"]}
    rows = [r for r in _inbox_rows(service_env) if r["user_id"] == user]
    assert {(r["event_type"], r["item_id"]) for r in rows} >= {
        ("impression", shown),
        ("click", shown),
        ("dwell", shown),
        ("rating", other),
        ("impression", other),
    }
    from models.data.schema import EVENTS

    assert all(list(r) == EVENTS.column_names for r in rows)
    # the click and the rating are positive engagements: the profile now counts two more events
    after = server.post("recommend", {"user_id": user, "k": 5}).json()
    assert after["profile"]["n_events"] == before["profile"]["n_events"] + 2
    assert shown not in [it["item_id"] for it in after["items"]]  # read items are not recommended again
    health = server.post("health").json()
    assert (
        health["counts"]["feedback_events_written"] >= 4
        and health["counts"]["users_with_fresh_feedback"] >= 1
    )


# --- bad input: 4xx with the field named, never a 500 or a stack trace ---------------------------------------------


def _bad_cases(users: list[str], items: list[str]) -> list[tuple[str, str, object, int, str]]:
    u, i = users[0], items[0]
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    return [
        # (case, endpoint, body (bytes = raw), expected status, text the error must contain)
        ("unknown user", "recommend", {"user_id": "nobody", "k": 3}, 404, "user_id"),
        ("unknown history item", "recommend", {"history": [i, "nothing"]}, 404, "history[1]"),
        ("k zero", "recommend", {"user_id": u, "k": 0}, 400, "k"),
        ("k above max_k", "recommend", {"user_id": u, "k": 101}, 400, "k"),
        ("k wrong type", "recommend", {"user_id": u, "k": "ten"}, 400, "k"),
        ("nobody", "recommend", {"k": 3}, 400, "user_id or history"),
        ("unknown field", "recommend", {"user_id": u, "kk": 3}, 400, "kk"),
        ("bad style", "recommend", {"user_id": u, "style": "shouty"}, 400, "style"),
        ("history too long", "recommend", {"history": [i] * 501}, 413, "history"),
        ("malformed json", "recommend", b'{"user_id": "u1", "k": ', 400, "JSON"),
        ("json array", "recommend", b"[1, 2]", 400, "object"),
        ("unknown item", "generate", {"user_id": u, "item_id": "nothing"}, 404, "item_id"),
        ("unknown task", "generate", {"user_id": u, "item_id": i, "task": "poem"}, 400, "task"),
        ("missing item", "generate", {"user_id": u}, 400, "item_id"),
        ("no events", "feedback", {"events": []}, 400, "events"),
        ("bad event type", "feedback", {"events": [{"event_type": "buy", "user_id": u, "item_id": i}]}, 400,
         "event_type"),
        ("rating out of range", "feedback",
         {"events": [{"event_type": "rating", "user_id": u, "item_id": i, "rating": 9}]}, 400, "rating"),
        ("dwell without seconds", "feedback",
         {"events": [{"event_type": "dwell", "user_id": u, "item_id": i}]}, 400, "dwell_seconds"),
        ("event in the future", "feedback",
         {"events": [{"event_type": "click", "user_id": u, "item_id": i, "ts": future}]}, 400, "future"),
        ("feedback unknown user", "feedback",
         {"events": [{"event_type": "click", "user_id": u, "item_id": i},
                     {"event_type": "click", "user_id": "nobody", "item_id": i}]}, 404, "events[1].user_id"),
        ("too many events", "feedback",
         {"events": [{"event_type": "impression", "user_id": u, "item_id": i}] * 1001}, 413, "events"),
        ("body too large", "feedback", b'{"events": [' + b" " * 1_100_000 + b"]}", 413, "body"),
    ]  # fmt: skip


def test_bad_input_gets_a_4xx_naming_the_field(server: Server, service_env: dict[str, str]):
    users, items = _users_items(service_env)
    inbox_before = len(_inbox_rows(service_env))
    failures = []
    for case, endpoint, body, status, needle in _bad_cases(users, items):
        if isinstance(body, bytes):
            resp = server.post(endpoint, content=body, headers={"content-type": "application/json"})
        else:
            resp = server.post(endpoint, body)
        text = resp.text
        payload = resp.json()
        ok = (
            resp.status_code == status
            and isinstance(
                payload, dict
            )  # one error shape: an object with "error" (BentoML 1.4 sends a list)
            and "error" in payload
            and needle in text
            and "Traceback" not in text
        )
        if not ok:
            failures.append(f"{case}: {resp.status_code} {text[:300]}")
    assert not failures, "\n".join(failures)
    # nothing of a refused feedback request reached the inbox (the valid first event of a refused batch neither)
    assert len(_inbox_rows(service_env)) == inbox_before
    assert server.post("health").status_code == 200  # and the server is still fine


def test_wrong_content_type_and_chunked_oversize_are_refused(server: Server, service_env: dict[str, str]):
    users, _ = _users_items(service_env)
    plain = server.post("recommend", content=b"user_id=u1", headers={"content-type": "text/plain"})
    assert plain.status_code == 400
    # no Content-Length: the limit is enforced while reading the chunks

    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "' + users[0].encode() + b'", "history": ['
        for _ in range(2000):
            yield b'"' + b"x" * 1000 + b'",'
        yield b'"x"]}'

    resp = httpx.post(
        f"{server.url}/recommend", content=chunks(), headers={"content-type": "application/json"}, timeout=60
    )
    assert resp.status_code == 413 and "body" in resp.json()["error"]


# --- overload ------------------------------------------------------------------------------------------------------


def test_requests_past_max_concurrency_are_refused_not_queued(server: Server, service_env: dict[str, str]):
    """With serving.max_concurrency requests in flight, the next one gets an immediate 429; health checks pass.

    BentoML 1.4 exempts /readyz, /livez and /metrics from the limit, and /health (its default livez name).
    """
    users, _ = _users_items(service_env)
    host, port = server.url.removeprefix("http://").split(":")
    # requests in flight that never finish: headers announce a body that is not sent, so each holds its slot
    head = (
        f"POST /recommend HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: 40\r\n\r\n"
    ).encode()
    held = [socket.create_connection((host, int(port)), timeout=30) for _ in range(MAX_CONCURRENCY)]
    try:
        for sock in held:
            sock.sendall(head)
        statuses = []
        for _ in range(100):  # until the server has taken the held requests in (it reads them asynchronously)
            resp = server.post("recommend", {"user_id": users[0], "k": 3})
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                break
            time.sleep(0.1)
        assert statuses[-1] == 429, statuses
        assert resp.json() == {"error": "Too many requests"}
        assert set(statuses[:-1]) <= {200}
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        assert server.post("health").status_code == 200
    finally:
        for sock in held:
            sock.close()
    for _ in range(100):  # the closed connections free their slots
        resp = server.post("recommend", {"user_id": users[0], "k": 3})
        if resp.status_code != 429:
            break
        time.sleep(0.1)
    assert resp.status_code == 200, resp.text


# --- durability ----------------------------------------------------------------------------------------------------


def test_acknowledged_feedback_survives_sigkill(service_env: dict[str, str], tmp_path: Path):
    """Every event the server answered 200 for is in the inbox after the whole server is SIGKILLed."""
    users, items = _users_items(service_env)
    log = tmp_path / "serve.log"
    server = start_server(service_env, log)
    acknowledged: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for n in range(30):
                ids = [f"crash-{uuid.uuid4().hex}" for _ in range(5)]
                events = [
                    {"event_type": "click", "user_id": users[(n + j) % len(users)], "item_id": items[j],
                     "request_id": rid, "position": j}
                    for j, rid in enumerate(ids)
                ]  # fmt: skip
                resp = client.post("/feedback", json={"events": events})
                assert resp.status_code == 200, resp.text
                acknowledged += ids
    finally:
        # right after the last answer: no chance to flush anything on the way out
        code = stop_server(server, signal.SIGKILL)
    assert code == -signal.SIGKILL
    stored = {r["request_id"] for r in _inbox_rows(service_env)}
    missing = [rid for rid in acknowledged if rid not in stored]
    assert len(acknowledged) == 150 and not missing, f"{len(missing)} acknowledged events lost"
    # a restarted server serves again and appends to a file of its own (one per worker process)
    files_before = {p.name for p in (Path(service_env["RECGEN_HOME"]) / "inbox" / "events").glob("*.jsonl")}
    again = start_server(service_env, log)
    try:
        resp = again.post(
            "feedback", {"events": [{"event_type": "click", "user_id": users[0], "item_id": items[0]}]}
        )
        assert resp.status_code == 200
        assert resp.json()["inbox_file"] not in files_before
    finally:
        assert stop_server(again) == 0
    assert {r["request_id"] for r in _inbox_rows(service_env)} >= set(acknowledged)


# --- the bento ---------------------------------------------------------------------------------------------------


def test_recgen_bento_asset_builds_a_bento_of_the_champion(service_env: dict[str, str]):
    script = textwrap.dedent(
        """
        import json
        import dagster as dg
        from orchestration.definitions import defs
        from orchestration.resources import RecgenResource, dbt_resource

        result = dg.materialize(
            [*defs.assets], selection=dg.AssetSelection.assets("recgen_bento"),
            resources={"recgen": RecgenResource(), "dbt": dbt_resource()},
        )
        meta = result.asset_materializations_for_node("recgen_bento")[0].metadata
        print("META " + json.dumps({k: str(v.value) for k, v in meta.items()}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=service_env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    meta = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("META "))[5:])
    from models.registry import ModelRegistry

    champion = ModelRegistry(Path(service_env["RECGEN_HOME"]) / "artifacts").load_champion("full_stack")
    assert meta["bento_tag"].startswith("recgen:") and meta["recommender_version"] == champion.version
    bento = Path(meta["path"])
    # built into the test's BENTOML_HOME, with the service, the whole domain package and the labels
    assert bento.is_relative_to(service_env["BENTOML_HOME"])
    assert (bento / "src" / "bentos" / "service.py").exists()
    assert (bento / "src" / "models" / "data" / "schema.py").exists()
    assert not (bento / "src" / "tests").exists()
    import yaml

    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["labels"]["recommender_version"] == champion.version
    assert info["service"] == "bentos.service:RecgenService"
