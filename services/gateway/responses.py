"""Responses that report when they are done: the usage event is written after the last byte
was sent, or after the client went away, never before and never twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter

import anyio
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.metrics import Metrics
from shared.http import HttpMiddleware

OVERHEAD_HEADER = b"x-tollgate-overhead-ms"


class MeteredResponse(Response):
    """A whole answer; on_done runs once it has been sent (or could not be)."""

    def __init__(
        self, content: bytes, status_code: int, media_type: str, on_done: Callable[[], None]
    ) -> None:
        super().__init__(content, status_code, media_type=media_type)
        self.on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_done()


class MeteredStream(StreamingResponse):
    """Server-sent events passed on as they come; on_done runs when the stream ended for any
    reason (last chunk, client gone, upstream broken), then the upstream is closed."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        on_done: Callable[[], None],
        close_upstream: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self.on_done = on_done
        self.close_upstream = close_upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass  # the client went away mid-stream: still metered below
        finally:
            self.on_done()
            # Closing the upstream stops its generation; shielded so a cancelled request
            # (client gone) still releases the connection.
            with anyio.CancelScope(shield=True):
                await self.close_upstream()


def _endpoint_label(path: str) -> str:
    if path.startswith("/v1/models"):
        return "/v1/models"
    if path in {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/healthz",
        "/readyz",
        "/metrics",
    }:
        return path
    return "other"


class OverheadMiddleware(HttpMiddleware):
    """Adds ``x-tollgate-overhead-ms`` (time in the gateway, upstream time excluded) to every
    response, and records requests by status and their latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        state = scope.setdefault("state", {})
        status = 500

        async def send_with_overhead(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # For a stream, upstream time is the wait for its first byte: what follows is
                # the model producing tokens, passed through as they come.
                overhead = max(0.0, perf_counter() - started - state.get("upstream_s", 0.0))
                self.metrics.overhead.observe(overhead)
                value = f"{overhead * 1000:.3f}".encode()
                message["headers"] = [
                    *message.get("headers", []),
                    *state.get("ratelimit_headers", ()),
                    (OVERHEAD_HEADER, value),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_overhead)
        finally:
            label = _endpoint_label(scope["path"])
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(perf_counter() - started)
