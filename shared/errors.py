"""Errors in OpenAI's shape: ``{"error": {"message", "type", "code", "param"}}``.

    ApiError                      500 server_error
    ├── BadRequest                400 invalid_request_error
    ├── Unauthorized              401 invalid_api_key
    ├── NotFound                  404 not_found
    ├── InsufficientPermissions   403 insufficient_permissions
    ├── Conflict                  409 conflict
    └── ServiceUnavailable        503 service_unavailable

Each service derives its own errors from these; ``install_error_handlers`` turns them, and
FastAPI's own validation and HTTP errors, into OpenAI's error body. Anything else is a 500
and one log line (the traceback only the first time a failure is seen at a given place), so
a failure that repeats per request does not flood the log.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of every error a Tollgate API answers with."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.instance_code = code or self.code
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.instance_code, self.param)


class BadRequest(ApiError):
    status_code = 400
    error_type = "invalid_request_error"
    code = None


class Unauthorized(ApiError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(ApiError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class InsufficientPermissions(ApiError):
    """The admin key lacks a permission the call needs (or would grant one it lacks)."""

    status_code = 403
    error_type = "invalid_request_error"
    code = "insufficient_permissions"

    def __init__(self, permission: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"This admin key lacks the permission '{permission}' that this request needs.",
            param=None,
        )
        self.permission = permission


class ServiceUnavailable(ApiError):
    status_code = 503
    error_type = "server_error"
    code = "service_unavailable"


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


_STATUS_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 429: "requests"}


def _validation_param(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    where = [p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    # The param names the field (nested fields dotted: "budget.limit_usd"); a list item's
    # index is told in the message instead ("allowed_models", item 2).
    param = ".".join(str(p) for p in where if not isinstance(p, int)) or None
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request.", None
    named = f" for '{param}'" if param else ""
    items = [p for p in where if isinstance(p, int)]
    if items:
        given = first.get("input")
        shown = f" {given[:64]!r}" if isinstance(given, str) else ""
        named += f" (item {items[-1] + 1}{shown})"
    return f"Invalid value{named}: {first.get('msg', 'invalid')}.", param


_SITES_REMEMBERED = 1000
_SERVER_ERROR = "The server had an error while processing your request."


class UnexpectedErrors:
    """Where an unexpected failure is logged: once with its traceback per place it happens
    (type, file, line), one line after that."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def place(self, exc: BaseException) -> tuple[str, bool]:
        """Where exc was raised (file:line), and whether that is the first time seen there."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        site = (type(exc).__qualname__, where)
        first = site not in self.seen
        if first and len(self.seen) < _SITES_REMEMBERED:
            self.seen.add(site)
        return where, first

    def log(self, exc: BaseException) -> None:
        where, first = self.place(exc)
        # %r keeps a message that holds newlines (or a client's text) on one line.
        log.error(
            "unhandled %s at %s: %r",
            type(exc).__name__,
            where,
            str(exc)[:200],
            exc_info=exc if first else None,
        )


class _CatchUnexpected:
    """Answers an unexpected exception with the generic 500 itself: Starlette's own 500
    handler re-raises for the server to log, a second traceback per failing request."""

    def __init__(self, app: ASGIApp, errors: UnexpectedErrors) -> None:
        self.app = app
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            self.errors.log(exc)
            if not started:  # else the server closes the half-sent response
                await JSONResponse(error_body(_SERVER_ERROR, "server_error"), 500)(
                    scope, receive, send
                )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of app in OpenAI's shape."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers or None)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_param(exc)
        return JSONResponse(error_body(message, "invalid_request_error", None, param), 400)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error_type = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
        if exc.status_code >= 500:
            error_type = "server_error"
        return JSONResponse(
            error_body(str(exc.detail), error_type, None, None),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    errors = UnexpectedErrors()

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Only what fails outside _CatchUnexpected (in a middleware added before it) gets here.
        errors.log(exc)
        return JSONResponse(error_body(_SERVER_ERROR, "server_error"), status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    # Innermost of the app's middleware, whenever the others are added (add_middleware puts
    # each outside the ones before): request ids and metrics still see the 500.
    app.user_middleware.append(Middleware(_CatchUnexpected, errors=errors))
