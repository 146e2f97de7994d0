"""What the console's tests share: the operator token, signing in, reading forms."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx

from services.console.main import create_app
from services.console.settings import ConsoleSettings

TOKEN = "console-test-operator-token-0123456789"
INTERNAL_TOKEN = "console-test-internal-token-0123456789"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def console_settings(**overrides: object) -> ConsoleSettings:
    """Console settings for a test: the test token, APIs where overrides say."""
    values: dict[str, object] = {
        "admin_token": TOKEN,
        "keys_url": "http://keys",
        "metering_url": "http://metering",
        "billing_url": "http://billing",
        "gateway_url": "http://127.0.0.1:8080",
        "log_json": True,
        **overrides,
    }
    return ConsoleSettings.model_validate(values)


@asynccontextmanager
async def console_client(
    settings: ConsoleSettings,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    base_url: str = "http://console.test",
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a console app running in this process."""
    app = create_app(settings, transports=transports)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client,
    ):
        yield client


async def sign_in(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    """Fill in and send the sign-in form as a browser would; the answer (not followed)."""
    form = await client.get("/signin")
    assert form.status_code == 200
    return await client.post(
        "/signin",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": "/"},
        headers={"Origin": str(client.base_url).rstrip("/")},
    )
