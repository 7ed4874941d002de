"""ASGI middleware of the service: API keys, a request-body size limit, and one error shape for every error.

Order of the checks on each request: the API key (when keys are configured and the path is protected), then
the body size. Every answer with a status of 400 or more leaves as a JSON object ``{"error": "..."}``, whatever
produced it (this middleware, a BentoML exception, pydantic validation, Starlette's router for a wrong method
or an unknown path).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import Any

import anyio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths anyone may call when API keys are set (unless protect_reads): BentoML's probes and metrics, the
# read endpoints and the docs. Every other path, the write endpoints and any unknown path, needs a key.
OPEN_PATHS = frozenset(
    {"/readyz", "/livez", "/healthz", "/health", "/recommend", "/metrics", "/", "/docs.json"}
)
OPEN_PREFIXES = ("/static_content/",)  # the docs page's scripts and styles
UNAUTHORIZED = "unauthorized: send a valid API key as 'Authorization: Bearer <key>'"
DRAIN_TIMEOUT_S = 10.0


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """API keys, a body-size limit (413), and ``{"error": ...}`` as the body of every error answer.

    **Keys.** With ``api_keys`` set, a protected path needs ``Authorization: Bearer <key>``; anything else is a
    401 with one message whether the header is missing, malformed or holds a wrong key. Only SHA-256 digests
    of the keys are kept, and the digest of the sent key is compared with every one of them by
    ``hmac.compare_digest`` (equal lengths, no early exit), so the time taken does not depend on how much of a
    key was right. Keys are never logged or echoed.

    **Size.** BentoML reads the whole body into memory before validating it and has no size limit of its own,
    so the limit is enforced here: from Content-Length when the client sends one (refused before a byte of the
    body is read), else by counting the chunks of a chunked upload (buffered up to the limit, then replayed to
    the app). A refused body is then read and dropped (never kept) up to ``drain_limit_bytes`` before the 413
    goes out with ``Connection: close``: a server that closes a socket with unread data resets it, and a
    client still sending a 20 MB body would see that reset instead of the answer. A client that sent
    ``Expect: 100-continue`` gets the answer without sending its body.

    **One error shape.** BentoML 1.4 answers a 4xx ``BentoMLException`` (``NotFound``, ``InvalidArgument``) as
    the JSON array ``[{"error": ...}]`` (bentoml/BentoML#4232, fix proposed in PR #5709) and Starlette answers
    a wrong method or path in plain text: such bodies are rewritten to ``{"error": ...}`` (a 405 keeps its
    ``Allow`` header and names the methods allowed).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        api_keys: Iterable[str] = (),
        protect_reads: bool = False,
        drain_limit_bytes: int = 64 * 1_048_576,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._key_digests = [_digest(k.encode()) for k in api_keys]
        self.protect_reads = protect_reads
        self.drain_limit_bytes = drain_limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        send = self._normalizing_send(send, scope)
        if self._needs_key(scope["path"]) and not self._authorized(headers.get(b"authorization")):
            await self._refuse(
                scope,
                receive,
                send,
                headers,
                401,
                {"error": UNAUTHORIZED},
                [(b"www-authenticate", b"Bearer")],
            )
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(
                    send, 400, {"error": "Content-Length: not an integer"}, [(b"connection", b"close")]
                )
                return
            if size > self.max_body_bytes:
                await self._refuse(scope, receive, send, headers, 413, self._too_big(size))
                return
            await self.app(scope, receive, send)
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
                more = message.get("more_body", False)
                chunks.clear()
                await self._refuse(
                    scope,
                    receive if more else _finished,
                    send,
                    headers,
                    413,
                    self._too_big(size, at_least=True),
                )
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

        await self.app(scope, replay, send)

    # --- keys --------------------------------------------------------------------------------------------------

    def _needs_key(self, path: str) -> bool:
        if not self._key_digests:
            return False
        if self.protect_reads:
            return True
        return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)

    def _authorized(self, header: bytes | None) -> bool:
        scheme, _, token = (header or b"").partition(b" ")
        given = _digest(token.strip())
        matched = False
        for digest in self._key_digests:  # every key is compared: no early exit on a match
            matched |= hmac.compare_digest(given, digest)
        return matched and scheme.lower() == b"bearer" and bool(token.strip())

    # --- refusals ----------------------------------------------------------------------------------------------

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        status: int,
        payload: dict[str, Any],
        extra: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer ``status`` without keeping the body; drop what the client still sends, up to the drain limit."""
        has_body = b"content-length" in headers or b"transfer-encoding" in headers
        if has_body and headers.get(b"expect", b"").lower() != b"100-continue":
            await self._drain(receive)
        await _send_json(send, status, payload, [*extra, (b"connection", b"close")])

    async def _drain(self, receive: Receive) -> None:
        dropped = 0
        with anyio.move_on_after(DRAIN_TIMEOUT_S):
            while dropped <= self.drain_limit_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return

    def _too_big(self, size: int, at_least: bool = False) -> dict[str, Any]:
        qualifier = "at least " if at_least else ""
        return {
            "error": f"body: {qualifier}{size} bytes, more than the limit of {self.max_body_bytes} bytes "
            "(settings.serving.max_body_bytes)"
        }

    # --- one error shape ---------------------------------------------------------------------------------------

    @staticmethod
    def _normalizing_send(send: Send, scope: Scope) -> Send:
        """Buffer error answers (small by nature) and send their body as one ``{"error": ...}`` object."""
        start: Message | None = None
        parts: list[bytes] = []

        async def wrapped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _error_body(b"".join(parts), start, scope)
            headers = [
                (k, v)
                for k, v in start.get("headers", [])
                if k.lower() not in (b"content-length", b"content-type")
            ]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return wrapped


async def _finished() -> Message:
    return {"type": "http.disconnect"}


def _error_body(body: bytes, start: Message, scope: Scope) -> bytes:
    """``body`` as ``{"error": ...}``: kept when it is one, unwrapped from BentoML's list, else the text."""
    status = int(start["status"])
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        located = _located(payload.get("detail"))
        return json.dumps({**payload, "error": located}).encode() if located else body
    if (
        isinstance(payload, list)
        and len(payload) == 1
        and isinstance(payload[0], dict)
        and "error" in payload[0]
    ):
        return json.dumps(payload[0]).encode()
    if status == 405:
        allow = dict((k.lower(), v) for k, v in start.get("headers", [])).get(b"allow", b"").decode()
        error = f"method: {scope.get('method')} is not allowed on {scope.get('path')}"
        return json.dumps({"error": error + (f" (allowed: {allow})" if allow else "")}).encode()
    if payload is not None:
        return json.dumps({"error": payload}).encode()
    text = body.decode(errors="replace").strip()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return json.dumps({"error": text or phrase}).encode()


def _located(detail: object) -> str | None:
    """Pydantic's error list as one line naming each field with its index: ``events[1].event_id: ...``."""
    if not isinstance(detail, list) or not detail:
        return None
    parts = []
    for error in detail:
        if not isinstance(error, dict) or not isinstance(error.get("loc"), list | tuple):
            return None
        where = ""
        for part in error["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)
