"""The console's app factory: ``uvicorn services.console.main:create_app --factory``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Message, Receive, Scope, Send

from services.console import auth, keys_pages, limits_pages, projects, usage_pages
from services.console.clients import (
    ApiClient,
    ApiProblem,
    ApiUnavailable,
    CostsApi,
    KeysApi,
    UsageApi,
)
from services.console.formatting import install_filters
from services.console.policies import summary
from services.console.session import COOKIE_NAME, Session, SessionStore, SignInThrottle
from services.console.settings import ConsoleSettings
from services.console.web import TEMPLATES, Console, CsrfRefused, SignedOut, render
from shared.catalogue import load_catalogue
from shared.http import HttpMiddleware, RequestIdMiddleware
from shared.logs import setup_logging

log = logging.getLogger("services.console")

_Api = TypeVar("_Api", bound=ApiClient)

# Everything the pages use is served by the app itself: no inline script, no other origin.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeadersMiddleware(HttpMiddleware):
    """Security headers on every answer, and one log line per request (path, never query)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={"duration_ms": round((time.perf_counter() - started) * 1000, 1)},
            )


def _models(settings: ConsoleSettings) -> tuple[str, ...]:
    if settings.catalogue_path is None or not settings.catalogue_path.exists():
        return ()
    return tuple(m.id for m in load_catalogue(settings.catalogue_path).models)


def create_app(
    settings: ConsoleSettings | None = None,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """The console app; settings from the environment unless given."""
    settings = settings or ConsoleSettings()
    transports = transports or {}
    setup_logging("console", settings.log_level, settings.log_json)
    templates = Jinja2Templates(directory=TEMPLATES)
    install_filters(templates.env)
    templates.env.globals["zip"] = zip
    templates.env.globals["policy_summary"] = summary

    def client(kind: type[_Api], service: str, url: str, peer: str) -> _Api:
        """One API's client: the operator token, the timeout, the test's transport if any."""
        return kind(
            service,
            url,
            settings.admin_token,
            timeout_s=settings.api_timeout_s,
            transport=transports.get(peer),
        )

    state = Console(
        settings=settings,
        sessions=SessionStore(settings.session_idle_s, settings.session_max_s),
        throttle=SignInThrottle(settings.signin_attempts_per_minute),
        keys=client(KeysApi, "key service", settings.keys_url, "keys"),
        usage=client(UsageApi, "Usage API", settings.metering_url, "metering"),
        costs=client(CostsApi, "Costs API", settings.billing_url, "billing"),
        templates=templates,
        models=_models(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for api in (state.keys, state.usage, state.costs):
            await api.aclose()

    app = FastAPI(
        title="Tollgate console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.console = state

    def _session(request: Request) -> Session | None:
        return state.sessions.get(request.cookies.get(COOKIE_NAME))

    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        """Liveness: the process answers."""
        return PlainTextResponse("ok")

    @app.exception_handler(SignedOut)
    async def signed_out(_: Request, exc: SignedOut) -> Response:
        query = "" if exc.next_path == "/" else "?" + urlencode({"next": exc.next_path})
        return RedirectResponse("/signin" + query, status_code=303)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _: CsrfRefused) -> HTMLResponse:
        context = {
            "title": "Request refused",
            "status": 403,
            "message": (
                "This form was out of date or came from another site, so nothing was changed. "
                "Go back, reload the page and try again."
            ),
        }
        return render(
            request, state, "error.html", context, session=_session(request), status_code=403
        )

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: ApiProblem) -> HTMLResponse:
        status = 503 if isinstance(exc, ApiUnavailable) else exc.status
        title = (
            "Service unavailable"
            if status >= 500
            else "Not found"
            if status == 404
            else ("Request failed")
        )
        context = {"title": title, "status": status, "message": exc.message}
        return render(
            request, state, "error.html", context, session=_session(request), status_code=status
        )

    app.include_router(auth.router)
    app.include_router(projects.router)
    app.include_router(keys_pages.router)
    app.include_router(limits_pages.router)
    app.include_router(usage_pages.router)
    return app
