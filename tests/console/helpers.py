"""What the console's tests share: the operator token, signing in, reading forms."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

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
        "internal_token": INTERNAL_TOKEN,
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


@asynccontextmanager
async def console_browsers(
    settings: ConsoleSettings, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """One console app in this process, and a maker of clients of it: each its own browser
    (its own cookies), all seeing the same sessions."""
    app = create_app(settings, transports=transports)
    async with app.router.lifespan_context(app), AsyncExitStack() as stack:

        def browser() -> httpx.AsyncClient:
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://console.test"
            )
            stack.push_async_callback(client.aclose)
            return client

        yield browser


async def sign_in(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    """Fill in and send the sign-in form as a browser would; the answer (not followed)."""
    form = await client.get("/signin")
    assert form.status_code == 200
    return await client.post(
        "/signin",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": "/"},
        headers={"Origin": str(client.base_url).rstrip("/")},
    )


async def admin_key(
    api: httpx.AsyncClient,
    permissions: list[str],
    project_ids: list[str] | None = None,
    name: str = "member",
) -> dict[str, Any]:
    """A new admin key, made by root through the key service (None: organization scope);
    its secret is the answer's ``value``."""
    scope = {"organization": True} if project_ids is None else {"project_ids": project_ids}
    answer = await api.post(
        "/v1/organization/admin_api_keys",
        json={"name": name, "scope": scope, "permissions": permissions},
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def audit_entries(api: httpx.AsyncClient, *params: tuple[str, str]) -> list[dict[str, Any]]:
    """The key service's audit entries with these filters, newest first (root's sight)."""
    answer = await api.get("/v1/organization/audit_logs", params=[("limit", "100"), *params])
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data
