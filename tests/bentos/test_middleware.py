"""The service's ASGI middleware: API keys, body-size limit (declared and chunked), one error shape."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bentos.middleware import UNAUTHORIZED, RequestLimits

LIMIT = 2048


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


async def bentoml_style_404(request: Request) -> JSONResponse:
    # what BentoML 1.4.39 sends for a NotFound raised in an API: a one-element array
    return JSONResponse([{"error": "user_id: unknown user 'x'"}], status_code=404)


async def pydantic_400(request: Request) -> JSONResponse:
    # what BentoML 1.4.39 sends for a validation error: a summary without the field, and pydantic's list
    detail = [
        {
            "type": "string_too_long",
            "loc": ["events", 1, "event_id"],
            "msg": "String should have at most 128 characters",
        },
        {"type": "missing", "loc": ["user_id"], "msg": "Field required"},
    ]
    return JSONResponse({"error": "2 validation errors for X", "detail": detail}, status_code=400)


async def list_ok(request: Request) -> JSONResponse:
    return JSONResponse([{"error": "not an error, a 200 list"}])


async def other_400(request: Request) -> JSONResponse:
    return JSONResponse([1, 2], status_code=400)


def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/recommend", echo, methods=["POST"]),
            Route("/feedback", echo, methods=["POST"]),
            Route("/readyz", echo, methods=["GET"]),
            Route("/missing", bentoml_style_404, methods=["POST"]),
            Route("/list", list_ok, methods=["POST"]),
            Route("/invalid", pydantic_400, methods=["POST"]),
            Route("/other", other_400, methods=["POST"]),
        ]
    )


def client(**options: object) -> TestClient:
    return TestClient(RequestLimits(app(), max_body_bytes=LIMIT, **options))  # type: ignore[arg-type]


def test_bodies_up_to_the_limit_reach_the_app_whole():
    resp = client().post("/echo", content=b"x" * LIMIT)
    assert resp.status_code == 200 and resp.json() == {"bytes": LIMIT}


def test_a_declared_oversized_body_is_refused_before_the_app_reads_it():
    resp = client().post("/echo", content=b"x" * (LIMIT + 1))
    assert resp.status_code == 413
    assert resp.json()["error"].startswith(f"body: {LIMIT + 1} bytes, more than the limit of {LIMIT}")


def test_a_chunked_body_is_counted_while_read():
    def small():
        yield b"a" * 1000
        yield b"b" * 1000

    def big():
        for _ in range(5):
            yield b"c" * 1000

    ok = client().post("/echo", content=small())  # a generator: sent chunked, without Content-Length
    assert ok.status_code == 200 and ok.json() == {"bytes": 2000}
    refused = client().post("/echo", content=big())
    assert refused.status_code == 413 and "at least" in refused.json()["error"]


def test_an_array_wrapped_4xx_error_becomes_an_object():
    resp = client().post("/missing", content=b"{}")
    assert resp.status_code == 404
    assert resp.json() == {"error": "user_id: unknown user 'x'"}
    assert int(resp.headers["content-length"]) == len(resp.content)


def test_success_bodies_are_left_alone_and_other_error_bodies_are_wrapped():
    assert client().post("/list", content=b"{}").json() == [{"error": "not an error, a 200 list"}]
    assert json.loads(client().post("/other", content=b"{}").content) == {"error": [1, 2]}


def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones():
    resp = client().get("/echo")  # Starlette's own answer is plain text "Method Not Allowed"
    assert resp.status_code == 405 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"error": "method: GET is not allowed on /echo (allowed: POST)"}
    assert resp.headers["allow"] == "POST"


def test_an_unknown_path_is_a_json_404():
    resp = client().post("/nowhere", content=b"{}")
    assert resp.status_code == 404 and resp.json() == {"error": "Not Found"}


KEYS = ["key-one-" + "a" * 24, "key-two-" + "b" * 24]


def test_without_keys_everything_is_open():
    assert client().post("/feedback", content=b"{}").status_code == 200


def test_writes_need_one_of_the_keys_and_reads_stay_open():
    c = client(api_keys=KEYS)
    for key in KEYS:
        resp = c.post("/feedback", content=b"{}", headers={"authorization": f"Bearer {key}"})
        assert resp.status_code == 200, resp.text
    assert c.post("/recommend", content=b"{}").status_code == 200
    assert c.get("/readyz").status_code == 200
    # a path that is not known to be open needs a key too (a trailing slash, an unknown path)
    assert c.post("/feedback/", content=b"{}").status_code == 401
    assert c.post("/nowhere", content=b"{}").status_code == 401


def test_missing_malformed_and_wrong_keys_get_the_same_401():
    c = client(api_keys=KEYS)
    tries = [
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": "Bearer "},
        {"authorization": KEYS[0]},  # no scheme
        {"authorization": f"Basic {KEYS[0]}"},
        {"authorization": f"Bearer {KEYS[0][:-1]}"},  # one character short
        {"authorization": f"Bearer {KEYS[0]}x"},
        {"authorization": "Bearer " + KEYS[0] + "," + KEYS[1]},
    ]
    bodies = set()
    for headers in tries:
        resp = c.post("/feedback", content=b"{}", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["www-authenticate"] == "Bearer"
        bodies.add(resp.text)
        assert KEYS[0] not in resp.text and KEYS[0][:-1] not in resp.text
    assert bodies == {json.dumps({"error": UNAUTHORIZED})}  # one answer: it does not say which part was wrong


def test_protect_reads_needs_the_key_everywhere():
    c = client(api_keys=KEYS, protect_reads=True)
    assert c.post("/recommend", content=b"{}").status_code == 401
    assert c.get("/readyz").status_code == 401
    ok = c.get("/readyz", headers={"authorization": f"Bearer {KEYS[1]}"})
    assert ok.status_code == 200


def test_keys_are_compared_by_digest_in_constant_time(monkeypatch):
    """Every key's digest goes through hmac.compare_digest, whether or not an earlier one matched."""
    import hmac

    import bentos.middleware as middleware

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", spy)
    c = client(api_keys=KEYS)
    assert (
        c.post("/feedback", content=b"{}", headers={"authorization": f"Bearer {KEYS[0]}"}).status_code == 200
    )
    assert len(calls) == len(KEYS) and all(len(a) == len(b) == 32 for a, b in calls)
    assert all(KEYS[0].encode() not in a + b for a, b in calls)  # digests, not the keys


def test_a_refused_body_is_dropped_so_a_large_upload_reads_its_answer():
    # the whole body was sent (TestClient would fail otherwise), yet the app never saw a byte of it
    seen: list[int] = []

    async def counting(request: Request) -> JSONResponse:
        seen.append(len(await request.body()))
        return JSONResponse({})

    limited = RequestLimits(
        Starlette(routes=[Route("/echo", counting, methods=["POST"])]), max_body_bytes=LIMIT, api_keys=KEYS
    )
    c = TestClient(limited)
    assert c.post("/echo", content=b"x" * (LIMIT * 50)).status_code == 401
    big = c.post("/echo", content=b"x" * (LIMIT * 50), headers={"authorization": f"Bearer {KEYS[0]}"})
    assert big.status_code == 413 and big.headers["connection"] == "close"
    assert seen == []


def test_a_validation_error_names_each_field_with_its_index():
    body = client().post("/invalid", content=b"{}").json()
    assert body["error"] == (
        "events[1].event_id: String should have at most 128 characters; user_id: Field required"
    )
    assert len(body["detail"]) == 2  # pydantic's own list is kept
