"""HTTP plumbing shared by the APIs: a pure ASGI middleware base, request ids,
constant-time bearer-token checks and the liveness route."""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import Unauthorized
from shared.ids import REQUEST_ID_CHARS, resource_id
from shared.logs import request_id_var

_SAFE_REQUEST_ID = re.compile(REQUEST_ID_CHARS)


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-Id`` if sane, else a new one."""
    given = next(
        (v.decode("latin-1") for k, v in headers if k.lower() == b"x-request-id"),
        None,
    )
    return given if given and _SAFE_REQUEST_ID.fullmatch(given) else resource_id("req", 20)


class HttpMiddleware:
    """A pure ASGI middleware of HTTP requests: a subclass implements ``handle``; lifespan
    and websocket scopes pass through untouched. Pure ASGI rather than Starlette's
    ``BaseHTTPMiddleware``, which runs the app in a task of its own and wraps streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request: call ``self.app``, wrapping ``send`` to see the answer."""
        raise NotImplementedError


class RequestIdMiddleware(HttpMiddleware):
    """Give every request an id (the caller's ``X-Request-Id`` if sane), in logs and headers."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(given: str | None, expected: SecretStr) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def require_bearer(
    expected: SecretStr, what: str = "operator token"
) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that lets a request through only with the expected bearer token."""

    async def guard(authorization: Annotated[str | None, Header()] = None) -> None:
        if not token_matches(bearer_token(authorization), expected):
            raise Unauthorized(
                f"Missing or incorrect {what}. Send it as 'Authorization: Bearer <token>'.",
                code="invalid_api_key",
            )

    return guard


def liveness_router() -> APIRouter:
    """A router with ``/healthz`` (liveness: the process answers ``{"status": "ok"}``); each
    service adds its own ``/readyz`` to it, since readiness is what differs between them."""
    router = APIRouter()

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    return router
