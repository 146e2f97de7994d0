"""The proxied routes as plain ASGI: one wrapper instead of a middleware stack.

A proxied call crossed eight ASGI layers (Starlette's error and exception middleware, request
id, overhead and metrics, the catch-all, FastAPI's router and telemetry, the route), each with
its own ``send`` wrapper: a large share of a request's CPU at these rates. ``ProxiedRoutes``
does for ``POST`` to the four proxied paths what those layers did, in one: the request id
(header, log context, ``request.state``), ``x-tollgate-overhead-ms``, the request metrics, an
``ApiError`` answered in OpenAI's shape, anything unexpected logged and answered with the
generic 500. Everything else (the management routes, other methods and paths) goes to the
FastAPI app as before, and so does every request while OpenTelemetry is configured: FastAPI
then adds its own server spans and metrics, which this path would skip.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from services.gateway.errors import UsageUnavailable
from services.gateway.instance import Gateway
from services.gateway.telemetry.metrics import Metrics
from services.gateway.telemetry.probe import configured, load_from_environment
from services.gateway.usage.responses import OVERHEAD_HEADER
from shared.errors import ApiError, UnexpectedErrors, error_body
from shared.http import request_id_of
from shared.logs import request_id_var

PROXIED = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"})
_SERVER_ERROR = "The server had an error while processing your request."


class ProxiedRoutes:
    """The gateway's ASGI app: proxied calls handled here, the rest by the FastAPI app."""

    def __init__(self, app: FastAPI, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        load_from_environment()
        self.errors = UnexpectedErrors()

    @property
    def state(self) -> Any:
        return self.app.state  # as the FastAPI app's: tests and tools read app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in PROXIED
            or configured()
        ):
            await self.app(scope, receive, send)
            return
        await self._proxied(scope, receive, send, scope["path"])

    async def _proxied(self, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        started = perf_counter()
        request_id = request_id_of(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        scope["app"] = self.app
        status = 500
        answering = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, answering
            if message["type"] == "http.response.start":
                answering = True
                status = message["status"]
                # For a stream, upstream time is the wait for its first byte: what follows is
                # the model producing tokens, passed through as they come.
                overhead = max(0.0, perf_counter() - started - state.get("upstream_s", 0.0))
                self.metrics.overhead.observe(overhead)
                message["headers"] = [
                    *message.get("headers", []),
                    *state.get("ratelimit_headers", ()),
                    (OVERHEAD_HEADER, f"{overhead * 1000:.3f}".encode()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            request = Request(scope, receive, send)
            try:
                gateway: Gateway = self.app.state.gateway
                if not gateway.emitter.accepting:
                    # Its usage could be kept nowhere: refuse it before any work.
                    raise UsageUnavailable()
                response = await gateway.proxy.handle(request, endpoint)
            except ApiError as exc:
                response = JSONResponse(
                    exc.body(), status_code=exc.status_code, headers=exc.headers or None
                )
            await response(scope, receive, send_with_headers)
        except Exception as exc:
            self.errors.log(exc)
            if not answering:  # else the server closes the half-sent response
                await JSONResponse(error_body(_SERVER_ERROR, "server_error"), 500)(
                    scope, receive, send_with_headers
                )
        finally:
            request_id_var.reset(token)
            self._count(endpoint, status, perf_counter() - started)

    def _count(self, endpoint: str, status: int, seconds: float) -> None:
        self.metrics.requests.inc(endpoint, str(status))
        self.metrics.latency.observe(seconds, endpoint)
