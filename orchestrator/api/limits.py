"""The request body limit, as ASGI middleware: a body over ``ORCHESTRATOR_MAX_PAYLOAD`` is answered
413 before any route reads it, whether it declares its length or arrives chunked. The rest of a
refused body is read and dropped first (up to ``DEFAULT_BODY_DRAIN_BYTES``): a client still sending
when the server closes the connection sees it reset, not the 413."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.errors import send_error
from orchestrator.settings import DEFAULT_BODY_DRAIN_BYTES


class BodyLimit:
    """Reads the body up to ``limit()`` bytes (checking ``Content-Length`` first), then hands it
    to the app in one message; the connection's later messages (a disconnect) pass through."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if declared <= DEFAULT_BODY_DRAIN_BYTES:
                await _drain(receive, DEFAULT_BODY_DRAIN_BYTES)
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body arrived
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                if message.get("more_body", False):
                    await _drain(receive, DEFAULT_BODY_DRAIN_BYTES - size)
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the body's remaining chunks, at most ``budget`` bytes of them."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _too_large(send: Send, limit: int) -> None:
    await send_error(send, 413, f"the request body is over {limit} bytes (ORCHESTRATOR_MAX_PAYLOAD)")
