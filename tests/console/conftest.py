"""The console's fixtures: the real key, metering and billing services, in this process.

Each test gets its own database schemas and topic prefix (from the session's servers), so
its projects, keys and ledgers are its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from deploy.ports import free_port
from deploy.stack import Endpoints
from services.billing.main import create_app as create_billing
from services.keys.main import create_app as create_keys
from services.metering.main import create_app as create_metering
from tests.console.browsing import browser, running
from tests.console.helpers import TOKEN
from tests.console.served import service_settings
from tests.served import Served

__all__ = ["Apis", "apis", "browser", "keys_only", "running", "schemas"]


@dataclass(frozen=True)
class Apis:
    """The APIs the console calls, running, and how to reach each in this process."""

    keys: FastAPI
    metering: FastAPI | None
    billing: FastAPI | None

    def transports(self) -> dict[str, httpx.AsyncBaseTransport]:
        out: dict[str, httpx.AsyncBaseTransport] = {"keys": httpx.ASGITransport(app=self.keys)}
        if self.metering is not None:
            out["metering"] = httpx.ASGITransport(app=self.metering)
        if self.billing is not None:
            out["billing"] = httpx.ASGITransport(app=self.billing)
        return out

    def client(self, app: FastAPI) -> httpx.AsyncClient:
        """A client of one of the APIs, with the operator token."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )


@pytest.fixture
async def schemas(endpoints: Endpoints, unique: str) -> AsyncIterator[tuple[str, str, str]]:
    """Keys, metering and billing schemas of this test's own, dropped afterwards."""
    names = (f"ck_{unique}", f"cm_{unique}", f"cb_{unique}")
    yield names
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        for name in names:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def _running(stack: AsyncExitStack, app: FastAPI) -> FastAPI:
    await stack.enter_async_context(app.router.lifespan_context(app))
    return app


@pytest.fixture
async def keys_only(
    endpoints: Endpoints, schemas: tuple[str, str, str], topic_prefix: str, unique: str
) -> AsyncIterator[Apis]:
    """The real key service alone (its relay publishing to this test's topics)."""
    keys, _, _ = service_settings(endpoints, schemas, topic_prefix, unique)
    async with AsyncExitStack() as stack:
        yield Apis(await _running(stack, create_keys(keys)), None, None)


@pytest.fixture
async def apis(
    endpoints: Endpoints, schemas: tuple[str, str, str], topic_prefix: str, unique: str
) -> AsyncIterator[Apis]:
    """The real key, metering and billing services, consuming this test's usage.events; the
    key service on a port of its own, since metering and billing follow its admin keys."""
    port = free_port()
    keys, metering, billing = service_settings(
        endpoints, schemas, topic_prefix, unique, keys_url=f"http://127.0.0.1:{port}"
    )
    async with AsyncExitStack() as stack:
        keys_app = create_keys(keys)
        served = await Served(keys_app, port).start()  # its lifespan too
        stack.push_async_callback(served.stop)
        yield Apis(
            keys_app,
            await _running(stack, create_metering(metering)),
            await _running(stack, create_billing(billing)),
        )
