"""The BentoML service as users run it: `bentoml serve` over a real (tiny) pipeline output.

The world is the session fixture of ``conftest.py``. The endpoint tests' server requires an API key for writes
(``RECGEN_SERVING__API_KEYS``); it runs as its own process group on a free loopback port and is stopped with
SIGTERM. The crash tests kill a server with SIGKILL: right after it acknowledged feedback (the inbox on disk
holds every acknowledged event), and while a client retries every unanswered batch (after the real ingest,
``raw.events`` holds every acknowledged event exactly once).
"""

from __future__ import annotations

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import (
    API_KEY,
    HOSTILE_IDS,
    MAX_CONCURRENCY,
    RERANK_STRENGTH,
    ROOT,
    Server,
    inbox_rows,
    start_server,
    stop_server,
    users_items,
)

pytestmark = pytest.mark.integration

# --- good input ----------------------------------------------------------------------------------------------


def test_health_names_models_device_and_counts(server: Server, service_env: dict[str, str]):
    resp = server.post("health")
    assert resp.status_code == 200
    body = resp.json()
    users, items = users_items(service_env)
    assert body["status"] == "ok" and body["device"] in ("cpu", "cuda")
    assert body["model_versions"]["recommender"].startswith("full_stack:")
    assert "generator" in body["model_versions"]
    assert body["counts"]["users"] == len(users) and body["counts"]["items"] == len(items) + len(HOSTILE_IDS)
    # the day of copy the pipeline generated was copied into the service's cache at start
    assert body["counts"]["cached_copies"] > 0
    assert body["fairness_rerank_strength"] == RERANK_STRENGTH
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_recommend_known_user(server: Server, service_env: dict[str, str]):
    users, items = users_items(service_env)
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
    _, items = users_items(service_env)
    history = items[:3]
    resp = server.post("recommend", {"history": history, "k": 8})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user_id"] is None
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 8 and not set(ids) & set(history)
    assert body["profile"]["n_events"] == 3 and not body["profile"]["cold_start"]


def test_recommend_with_content_generates_then_serves_from_cache(server: Server, service_env: dict[str, str]):
    users, _ = users_items(service_env)
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
    users, items = users_items(service_env)
    resp = server.post(
        "generate", {"user_id": users[1], "item_id": items[5], "task": "blurb", "style": "casual"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["item_id"] == items[5] and body["content"]["style"] == "casual"
    assert body["content"]["text"].strip() and body["content"]["model_version"]
    summary = server.post("generate", {"user_id": users[1], "item_id": items[5], "task": "summary"})
    assert summary.status_code == 200 and summary.json()["content"]["task"] == "summary"


def test_generate_answers_carry_the_faithfulness_verdict_of_the_items_own_facts(
    server: Server, service_env: dict[str, str]
):
    import duckdb

    from models.generation.guardrails import unsupported_claims
    from models.generation.service import ItemText

    users, items = users_items(service_env)
    con = duckdb.connect(service_env["RECGEN_DUCKDB_PATH"], read_only=True)
    try:
        rows = con.execute(
            "select * from marts.item_features where item_id in (select unnest(?))", [items[:6]]
        ).df()
    finally:
        con.close()
    texts = {str(r["item_id"]): ItemText.from_row(r) for r in rows.to_dict("records")}
    verdicts = []
    for item_id in items[:6]:
        for task in ("blurb", "summary"):
            resp = server.post("generate", {"user_id": users[2], "item_id": item_id, "task": task})
            assert resp.status_code == 200, resp.text
            content = resp.json()["content"]
            # the verdict is the guardrails' claim check of the served text against this item's facts ...
            expected = unsupported_claims(content["text"], texts[item_id].sources)
            assert content["unsupported_claims"] == expected
            assert content["faithful"] is (not expected)
            # ... and a text from another item would not pass it (so the verdict can say false)
            other = texts[items[(items.index(item_id) + 1) % 6]]
            assert unsupported_claims(other.body, texts[item_id].sources)
            verdicts.append(content["faithful"])
    # copy the model wrote and the guardrails published is faithful by the same check
    assert all(verdicts)


def _pipeline_copy(service_env: dict[str, str]) -> list[tuple[str, str, str, str, str]]:
    """The daily copy the pipeline wrote: (user_id, item_id, task, style, text) rows."""
    import duckdb

    con = duckdb.connect(service_env["RECGEN_DUCKDB_PATH"], read_only=True)
    try:
        return con.execute(
            "select user_id, item_id, task, style, text from generation.generated_content order by all"
        ).fetchall()
    finally:
        con.close()


def test_copy_the_pipeline_wrote_is_served_from_its_cache(server: Server, service_env: dict[str, str]):
    rows = _pipeline_copy(service_env)
    assert rows, "the pipeline wrote no copy"
    cached_before = server.post("health").json()["counts"]["cached_copies"]
    # /generate for pairs the pipeline wrote, in their style: the pipeline's text, marked cached
    for user, item, task, style, text in rows[:4]:
        resp = server.post("generate", {"user_id": user, "item_id": item, "task": task, "style": style})
        assert resp.status_code == 200, resp.text
        content = resp.json()["content"]
        assert content["cached"] is True and content["text"] == text, (user, item, content)
    # nothing was written on demand for them
    assert server.post("health").json()["counts"]["cached_copies"] == cached_before
    # /recommend with_content: every served item the pipeline wrote a blurb for (for this user, in the style
    # the answer uses) carries that blurb from the cache
    by_user: dict[str, dict[tuple[str, str], str]] = {}
    for user, item, task, style, text in rows:
        if task == "blurb":
            by_user.setdefault(user, {})[(item, style)] = text
    matched = 0
    for user in sorted(by_user)[:3]:
        resp = server.post("recommend", {"user_id": user, "k": 3, "with_content": True})
        assert resp.status_code == 200, resp.text
        for it in resp.json()["items"]:
            text = by_user[user].get((it["item_id"], it["content"]["style"]))
            if text is not None:
                matched += 1
                assert it["content"]["cached"] is True and it["content"]["text"] == text
    assert matched > 0, "no served item had the pipeline's copy"


def test_concurrent_requests_copy_is_written_in_shared_micro_batches(
    server: Server, service_env: dict[str, str]
):
    from concurrent.futures import ThreadPoolExecutor

    users, _ = users_items(service_env)
    before = server.post("health").json()["counts"]
    n = MAX_CONCURRENCY  # as many as the server takes at once (more would be answered 429)

    def call(user: str) -> httpx.Response:
        # a style no earlier test asked for these users, so most copy is not cached and is written now
        return server.post(
            "recommend", {"user_id": user, "k": 3, "with_content": True, "style": "enthusiastic"}
        )

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(call, users[10 : 10 + n]))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert all(it["content"]["text"].strip() for r in answers for it in r.json()["items"])
    after = server.post("health").json()["counts"]
    jobs = after["content_jobs"] - before["content_jobs"]
    batches = after["content_batches"] - before["content_batches"]
    assert jobs == 3 * n  # serving.content_items (3) per request
    # the copy jobs of concurrent requests ran together: fewer generate calls than requests, and a batch
    # larger than one request's three jobs
    assert batches < n and after["largest_content_batch"] > 3, (jobs, batches, after)
    assert after["cached_copies"] > before["cached_copies"]  # copy written now is added to the cache


def test_feedback_is_written_to_the_inbox_and_refreshes_the_history(
    server: Server, service_env: dict[str, str]
):
    users, items = users_items(service_env)
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
    assert resp.json() == {
        "accepted": 4,
        "new": 4,
        "duplicates": 0,
        "rows_written": 5,
        "inbox_file": resp.json()["inbox_file"],
    }
    rows = [r for r in inbox_rows(service_env) if r["user_id"] == user]
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
    users, items = users_items(service_env)
    inbox_before = len(inbox_rows(service_env))
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
    assert len(inbox_rows(service_env)) == inbox_before
    assert server.post("health").status_code == 200  # and the server is still fine


def test_wrong_content_type_and_chunked_oversize_are_refused(server: Server, service_env: dict[str, str]):
    users, _ = users_items(service_env)
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


# --- keys, retries and polite refusals -------------------------------------------------------------------------


def test_writes_need_the_api_key_and_reads_stay_open(server: Server, service_env: dict[str, str]):
    from bentos.middleware import UNAUTHORIZED

    users, items = users_items(service_env)
    batch = {"events": [{"event_type": "click", "user_id": users[0], "item_id": items[0]}]}
    before = len(inbox_rows(service_env))
    wrong = [{}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {API_KEY[:-1]}"},
             {"authorization": API_KEY}, {"authorization": f"Basic {API_KEY}"}]  # fmt: skip
    answers = set()
    for headers in wrong:
        for endpoint, body in (("feedback", batch), ("generate", {"user_id": users[0], "item_id": items[0]})):
            resp = server.post(endpoint, body, auth=False, headers=headers)
            assert resp.status_code == 401, (endpoint, headers, resp.text)
            answers.add(resp.text)
    assert answers == {
        json.dumps({"error": UNAUTHORIZED})
    }  # one answer: it does not say which part was wrong
    assert len(inbox_rows(service_env)) == before  # nothing was written
    assert server.post("feedback", batch).status_code == 200  # with the key
    # reads stay open (serving.protect_reads is off)
    assert server.post("recommend", {"user_id": users[0], "k": 3}, auth=False).status_code == 200
    assert server.post("health", auth=False).status_code == 200
    for probe in ("readyz", "livez"):
        assert httpx.get(f"{server.url}/{probe}", timeout=10).status_code == 200
    assert API_KEY not in server.log.read_text(errors="replace")  # keys are never logged


def test_the_same_batch_twice_stores_one_row_and_answers_a_duplicate(
    server: Server, service_env: dict[str, str]
):
    users, items = users_items(service_env)
    event_id = f"client-{uuid.uuid4().hex}"
    batch = {"events": [{"event_id": event_id, "event_type": "click", "user_id": users[3], "item_id": items[4],
                         "request_id": f"r-{event_id}", "position": 1}]}  # fmt: skip
    first = server.post("feedback", batch)
    assert first.status_code == 200, first.text
    assert first.json() | {"inbox_file": None} == {
        "accepted": 1, "new": 1, "duplicates": 0, "rows_written": 1, "inbox_file": None
    }  # fmt: skip
    second = server.post("feedback", batch)
    assert second.status_code == 200, second.text
    assert second.json() == {"accepted": 1, "new": 0, "duplicates": 1, "rows_written": 0, "inbox_file": None}
    assert [r["event_id"] for r in inbox_rows(service_env)].count(event_id) == 1


def test_without_event_ids_the_idempotency_key_makes_a_retry_a_duplicate(
    server: Server, service_env: dict[str, str]
):
    from models.feedback import derive_event_id

    users, items = users_items(service_env)
    batch = {"events": [{"event_type": "rating", "user_id": users[4], "item_id": items[6], "rating": 4},
                        {"event_type": "click", "user_id": users[4], "item_id": items[7]}]}  # fmt: skip
    key = f"retry-{uuid.uuid4().hex}"
    first = server.post("feedback", batch, headers={"idempotency-key": key}).json()
    again = server.post("feedback", batch, headers={"idempotency-key": key}).json()
    other = server.post("feedback", batch, headers={"idempotency-key": key + "-b"}).json()
    # 2 events + a synthetic impression each (they came from no slate): 4 rows, written once per key
    assert (first["new"], first["duplicates"], first["rows_written"]) == (2, 0, 4)
    assert (again["new"], again["duplicates"], again["rows_written"]) == (0, 2, 0)
    assert (other["new"], other["duplicates"]) == (2, 0)  # another key: other events
    ids = [r["event_id"] for r in inbox_rows(service_env)]
    assert [ids.count(derive_event_id(key, i)) for i in range(2)] == [1, 1]
    bad = server.post("feedback", batch, headers={"idempotency-key": "k" * 300})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]
    health = server.post("health").json()["counts"]
    assert health["feedback_duplicates"] >= 2 and health["feedback_ids_indexed"] >= 8


def test_bad_event_ids_are_a_400_naming_the_field_and_index(server: Server, service_env: dict[str, str]):
    users, items = users_items(service_env)
    ok = {"event_type": "click", "user_id": users[0], "item_id": items[0]}
    for bad in ["", "x" * 129, "caf\u00e9", "tab\there"]:
        resp = server.post("feedback", {"events": [ok, {**ok, "event_id": bad}]})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"].startswith("events[1].event_id: "), resp.text


def test_a_20_mb_body_gets_a_json_413_and_a_wrong_method_a_json_405(server: Server):
    big = b'{"events": [' + b" " * 20_000_000 + b"]}"
    for auth in (
        True,
        False,
    ):  # refused for its size with the key, for the key without it: an answer either way
        resp = server.post("feedback", content=big, auth=auth, headers={"content-type": "application/json"})
        assert resp.status_code == (413 if auth else 401), resp.text[:300]
        assert resp.headers["content-type"] == "application/json" and "error" in resp.json()
    assert "body: 20000014 bytes, more than the limit" in server.post("feedback", content=big).json()["error"]
    resp = httpx.get(f"{server.url}/recommend", timeout=30)
    assert resp.status_code == 405 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"error": "method: GET is not allowed on /recommend (allowed: POST)"}
    assert httpx.put(f"{server.url}/health", timeout=30).json()["error"].startswith("method: PUT")
    assert server.post("health").status_code == 200  # and the server is still fine


# --- overload ------------------------------------------------------------------------------------------------------


def test_requests_past_max_concurrency_are_refused_not_queued(server: Server, service_env: dict[str, str]):
    """With serving.max_concurrency requests in flight, the next one gets an immediate 429; health checks pass.

    BentoML 1.4 exempts /readyz, /livez and /metrics from the limit, and /health (its default livez name).
    """
    users, _ = users_items(service_env)
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
    users, items = users_items(service_env)
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
    stored = {r["request_id"] for r in inbox_rows(service_env)}
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
    assert {r["request_id"] for r in inbox_rows(service_env)} >= set(acknowledged)


INGEST = textwrap.dedent(
    """
    import dagster as dg
    from orchestration.definitions import defs
    from orchestration.resources import RecgenResource, dbt_resource

    result = dg.materialize(
        [*defs.assets], selection=dg.AssetSelection.assets(["raw", "users"], ["raw", "items"], ["raw", "events"]),
        resources={"recgen": RecgenResource(), "dbt": dbt_resource()}, raise_on_error=True,
    )
    print("INGESTED", result.success)
    """
)
N_BATCHES, BATCH = 40, 5


def test_retried_batches_are_in_raw_events_exactly_once_after_a_worker_sigkill(
    service_env: dict[str, str], tmp_path: Path
):
    """A client retries every unanswered batch while the worker is SIGKILLed; ingest then finds each event once.

    Odd batches carry client event_ids, even ones an Idempotency-Key. Every first attempt gives up waiting
    after 1 ms (a client timing out while the server writes), so its batch may already be stored when the
    retry comes; the worker is SIGKILLed once a third of the batches are answered, with requests in flight.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import duckdb

    from models.feedback import derive_event_id

    users, items = users_items(service_env)
    server = start_server(service_env, tmp_path / "serve.log")
    run = uuid.uuid4().hex[:8]
    batches = []
    for b in range(N_BATCHES):
        events = [
            {"event_type": "click", "user_id": users[(b + j) % len(users)], "item_id": items[(b * BATCH + j) % len(items)],
             "request_id": f"crash-{run}-{b}", "position": j}
            for j in range(BATCH)
        ]  # fmt: skip
        key = None
        if b % 2:
            for j, event in enumerate(events):
                event["event_id"] = f"crash-{run}-{b}-{j}"
        else:
            key = f"crash-{run}-{b}"
        ids = [e.get("event_id") or derive_event_id(key, j) for j, e in enumerate(events)]  # type: ignore[arg-type]
        batches.append((events, key, ids))
    answers: dict[int, dict] = {}
    attempts = [0] * N_BATCHES
    failures: list[str] = []
    lock = threading.Lock()

    def send(b: int) -> None:
        events, key, _ = batches[b]
        headers = {"idempotency-key": key} if key else {}
        deadline = time.monotonic() + 240
        with httpx.Client(base_url=server.url) as client:
            while time.monotonic() < deadline:  # bounded: retried until answered or out of time
                attempts[b] += 1
                timeout = httpx.Timeout(30, read=0.001 if attempts[b] == 1 else 30)
                try:
                    resp = client.post("/feedback", json={"events": events}, headers=headers, timeout=timeout)
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                if resp.status_code == 200:
                    with lock:
                        answers[b] = resp.json()
                    return
                failures.append(f"batch {b}: {resp.status_code} {resp.text[:200]}")
                return

    killed: list[int] = []
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(send, b) for b in range(N_BATCHES)]
            while len(answers) < N_BATCHES // 3 and not all(f.done() for f in futures):
                time.sleep(0.05)
            killed = server.worker_pids()
            for pid in killed:
                os.kill(pid, signal.SIGKILL)  # the worker only: the arbiter starts a new one
            for future in futures:
                future.result()
        new_workers = server.worker_pids()
    finally:
        stop_server(server)
    assert not failures, failures
    assert len(answers) == N_BATCHES, f"{N_BATCHES - len(answers)} batches never answered"
    assert killed and not set(killed) & set(new_workers)  # the worker was killed and replaced
    retried = sum(a > 1 for a in attempts)
    new = sum(a["new"] for a in answers.values())
    duplicates = sum(a["duplicates"] for a in answers.values())
    print(f"{N_BATCHES} batches, {sum(attempts)} attempts ({retried} batches retried), answers: {new} new + "
          f"{duplicates} duplicates; worker {killed} SIGKILLed, replaced by {new_workers}")  # fmt: skip
    assert new + duplicates == N_BATCHES * BATCH
    assert retried >= N_BATCHES // 2  # the first attempts timed out
    # a retry of a batch stored before its answer was lost is recognized (the first attempts had 1 ms)
    assert duplicates > 0
    acknowledged = [i for _, _, ids in batches for i in ids]
    stored = [r["event_id"] for r in inbox_rows(service_env)]
    assert sorted(i for i in stored if i in set(acknowledged)) == sorted(
        acknowledged
    )  # each once in the inbox
    # the real ingest asset reads the inbox into raw.events
    proc = subprocess.run(
        [sys.executable, "-c", INGEST], cwd=ROOT, env=service_env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "INGESTED True" in proc.stdout, proc.stderr[-3000:]
    with duckdb.connect(service_env["RECGEN_DUCKDB_PATH"], read_only=True) as con:
        counts = dict(
            con.execute(
                "select event_id, count(*) from raw.events where event_id in (select unnest(?)) group by 1",
                [acknowledged],
            ).fetchall()
        )
        quarantined = con.execute(
            "select count(*) from raw.quarantine where json_extract_string(record, '$.event_id') in (select unnest(?))",
            [acknowledged],
        ).fetchone()[0]
    assert len(counts) == len(acknowledged) and set(counts.values()) == {1}, (
        "an event missing or stored twice"
    )
    assert quarantined == 0


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
