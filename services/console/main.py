"""The console's app factory: ``uvicorn services.console.main:create_app --factory``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import httpx
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Message, Receive, Scope, Send

from services.console import audit_pages, auth, keys_pages, limits_pages, projects, usage_pages
from services.console.clients import ApiClient, BrowserMiddleware, CostsApi, KeysApi, UsageApi
from services.console.error_pages import install_error_pages
from services.console.formatting import install_filters
from services.console.policies import summary
from services.console.proxy_auth import ProxySignInMiddleware
from services.console.session import SessionStore, SignInThrottle
from services.console.settings import ConsoleSettings
from services.console.sign_ins import SignIns
from services.console.web import TEMPLATES, Console
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
        """One API's client (bound to a session's credential per request), the timeout, the
        test's transport if any."""
        return kind(service, url, timeout_s=settings.api_timeout_s, transport=transports.get(peer))

    state = Console(
        settings=settings,
        sessions=SessionStore(settings.session_idle_s, settings.session_max_s),
        throttle=SignInThrottle(settings.signin_attempts_per_minute),
        sign_ins=SignIns(
            settings.keys_url,
            settings.internal_token,
            timeout_s=settings.api_timeout_s,
            transport=transports.get("keys"),
        ),
        keys=client(KeysApi, "key service", settings.keys_url, "keys"),
        usage=client(UsageApi, "Usage API", settings.metering_url, "metering"),
        costs=client(CostsApi, "Costs API", settings.billing_url, "billing"),
        templates=templates,
        models=_models(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for api in (state.keys, state.usage, state.costs, state.sign_ins):
            await api.aclose()

    app = FastAPI(
        title="Tollgate console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.console = state

    if settings.proxy_auth:
        app.add_middleware(ProxySignInMiddleware, console=state)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(BrowserMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        """Liveness: the process answers."""
        return PlainTextResponse("ok")

    install_error_pages(app, state)
    app.include_router(auth.router)
    app.include_router(projects.router)
    app.include_router(keys_pages.router)
    app.include_router(limits_pages.router)
    app.include_router(usage_pages.router)
    app.include_router(audit_pages.router)
    return app
