"""The whole system for the browser test: every service on a free port, in this event loop.

The services and their wiring are ``deploy/system.py``'s, as for ``make up``; this harness
adds what is the test's own: the apps built in this process, free ports, the console tests'
tokens, this test's schemas, topic prefix, consumer groups and Redis prefix, quiet logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from deploy import system as described
from deploy.endpoints import Endpoints
from deploy.ports import free_port
from services.billing.settings import BillingSettings
from services.keys.settings import KeysSettings
from services.metering.settings import MeteringSettings
from tests.console.helpers import INTERNAL_TOKEN, TOKEN
from tests.served import Served

# What the console's tests need of each service's log: its warnings, as text.
_QUIET = {"LOG_JSON": "false", "LOG_LEVEL": "WARNING"}


def wiring(
    endpoints: Endpoints,
    schemas: tuple[str, str, str],
    topic_prefix: str,
    unique: str,
    *,
    urls: dict[str, str] | None = None,
    folder: Path | None = None,
    redis_prefix: str | None = None,
) -> described.Wiring:
    """The system on this test's schemas (keys, metering, billing), topics and Redis prefix,
    with the console tests' tokens; with a folder, the gateway's spool and a demo catalogue
    pointing at this system's upstream are in it."""
    urls = urls or {}
    catalogue = described.CATALOGUE
    if folder is not None:
        catalogue = described.demo_catalogue(folder, urls["upstream"])
    return described.Wiring(
        endpoints,
        urls=urls,
        admin_token=TOKEN,
        internal_token=INTERNAL_TOKEN,
        spools=folder,
        catalogue=catalogue,
        isolation=described.Isolation(
            topic_prefix=topic_prefix,
            schemas=dict(zip(("keys", "metering", "billing"), schemas, strict=True)),
            unique=unique,
            redis_prefix=redis_prefix or f"console:{unique}:",
        ),
    )


def _settings(name: str, wired: described.Wiring) -> dict[str, object]:
    (service,) = (s for s in described.SERVICES if s.name == name)
    values = described.settings_of(service, wired) | _QUIET
    return {k.lower(): v for k, v in values.items()}


def service_settings(
    endpoints: Endpoints,
    schemas: tuple[str, str, str],
    topic_prefix: str,
    unique: str,
    *,
    keys_url: str = "http://127.0.0.1:9",
) -> tuple[KeysSettings, MeteringSettings, BillingSettings]:
    """Settings of one key, metering and billing service on this test's schemas and topics;
    metering and billing follow the key service's admin keys at keys_url."""
    wired = wiring(endpoints, schemas, topic_prefix, unique, urls={"keys": keys_url})
    return (
        KeysSettings.model_validate(_settings("keys", wired)),
        MeteringSettings.model_validate(_settings("metering", wired)),
        BillingSettings.model_validate(_settings("billing", wired)),
    )


@dataclass(frozen=True)
class System:
    """Where each part of the running system answers."""

    upstream: str
    keys: str
    metering: str
    billing: str
    gateway: str
    console: str


async def _ready(url: str, timeout: float = 60.0) -> None:
    async with httpx.AsyncClient() as client:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not become ready within {timeout}s")


@asynccontextmanager
async def system(
    *,
    endpoints: Endpoints,
    schemas: tuple[str, str, str],
    topic_prefix: str,
    redis_prefix: str,
    unique: str,
    folder: Path,
) -> AsyncIterator[System]:
    """Upstream, keys, metering, billing, gateway and console, on this test's data, started
    in the system's order; the console once the gateway is ready (its pages show models)."""
    services = [replace(s, port=free_port()) for s in described.SERVICES]
    urls = {s.name: s.url for s in services}
    wired = wiring(
        endpoints,
        schemas,
        topic_prefix,
        unique,
        urls=urls,
        folder=folder,
        redis_prefix=redis_prefix,
    )
    async with AsyncExitStack() as stack:
        for service in services:
            if service.name == "console":
                await _ready(urls["gateway"] + "/readyz")
            values = described.settings_of(service, wired) | _QUIET
            app = described.create_app(service, values)
            served = await Served(app, service.port, http=service.http or "auto").start()
            stack.push_async_callback(served.stop)
        yield System(**{name: urls[name] for name in System.__dataclass_fields__})
