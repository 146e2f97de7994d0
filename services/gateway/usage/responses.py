"""Responses that report when they are done: the usage event is written after the last byte
was sent, or after the client went away, never before and never twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from time import perf_counter

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.telemetry.metrics import Metrics
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


class MeteredStream(Response):
    """Server-sent events passed on as they come; on_done runs when the stream ended for any
    reason (last chunk, client gone, upstream broken), then the upstream is closed.

    Plain asyncio rather than Starlette's ``StreamingResponse``, whose anyio task group per
    stream (to notice the client leaving) was a third of a streamed request's CPU: one task
    here waits for ``http.disconnect`` and cancels the relay, which stops reading upstream."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        on_done: Callable[[], None],
        close_upstream: Callable[[], None],
    ) -> None:
        self.content = content
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self.on_done = on_done
        self.close_upstream = close_upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        relaying = asyncio.current_task(loop)
        assert relaying is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            relaying.cancel()

        # Runs only while the relay waits: it is cancelled below before the relay's next wait.
        watcher = loop.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.content:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            relaying.uncancel()  # the client went away mid-stream: still metered below
        finally:
            watcher.cancel()
            self.on_done()
            # Closing the upstream stops its generation (no wait: a cancelled request still
            # releases the connection).
            self.close_upstream()


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
            self.metrics.requests.inc(label, str(status))
            self.metrics.latency.observe(perf_counter() - started, label)
