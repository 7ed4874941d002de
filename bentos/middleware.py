"""ASGI middleware of the service: a request-body size limit and one error shape for every 4xx answer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """Reject bodies over ``max_body_bytes`` with 413, and answer every 4xx as a JSON object.

    BentoML reads the whole body into memory before validating it and has no size limit of its own, so the
    limit is enforced here: from Content-Length when the client sends one, else by counting the chunks of a
    chunked upload (buffered up to the limit, then replayed to the app).

    BentoML 1.4 answers a 4xx ``BentoMLException`` (``NotFound``, ``InvalidArgument``) as the JSON array
    ``[{"error": ...}]`` while validation errors and its OpenAPI schema use an object (bentoml/BentoML#4232,
    fix proposed in PR #5709): such a one-element array is unwrapped so clients read ``body["error"]`` always.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                await _send_json(send, 400, {"error": "Content-Length: not an integer"})
                return
            if too_big:
                await _send_json(send, 413, self._too_big(int(declared)))
                return
            await self.app(scope, receive, self._normalizing_send(send))
            return
        # No Content-Length (chunked): read at most the limit before handing the body on.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _send_json(send, 413, self._too_big(size, at_least=True))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, self._normalizing_send(send))

    def _too_big(self, size: int, at_least: bool = False) -> dict[str, Any]:
        qualifier = "at least " if at_least else ""
        return {
            "error": f"body: {qualifier}{size} bytes, more than the limit of {self.max_body_bytes} bytes "
            "(settings.serving.max_body_bytes)"
        }

    @staticmethod
    def _normalizing_send(send: Send) -> Send:
        """Buffer 4xx JSON answers (small by nature) so an array-wrapped error can be unwrapped."""
        start: Message | None = None
        parts: list[bytes] = []

        async def wrapped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(parts)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
                body = json.dumps(payload[0]).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return wrapped
