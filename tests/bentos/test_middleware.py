"""The service's ASGI middleware: body-size limit (declared and chunked) and one error shape for 4xx answers."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bentos.middleware import RequestLimits

LIMIT = 2048


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


async def bentoml_style_404(request: Request) -> JSONResponse:
    # what BentoML 1.4.39 sends for a NotFound raised in an API: a one-element array
    return JSONResponse([{"error": "user_id: unknown user 'x'"}], status_code=404)


async def list_ok(request: Request) -> JSONResponse:
    return JSONResponse([{"error": "not an error, a 200 list"}])


async def other_400(request: Request) -> JSONResponse:
    return JSONResponse([1, 2], status_code=400)


def client() -> TestClient:
    app = Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/missing", bentoml_style_404, methods=["POST"]),
            Route("/list", list_ok, methods=["POST"]),
            Route("/other", other_400, methods=["POST"]),
        ]
    )
    return TestClient(RequestLimits(app, max_body_bytes=LIMIT))


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


def test_other_bodies_are_left_alone():
    assert client().post("/list", content=b"{}").json() == [{"error": "not an error, a 200 list"}]
    assert json.loads(client().post("/other", content=b"{}").content) == [1, 2]


def test_get_requests_pass_through():
    resp = client().get("/echo")
    assert resp.status_code == 405  # starlette's own answer for a GET on a POST route, untouched
