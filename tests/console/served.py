"""The whole system for the browser test: every service on a free port, in this event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.demo_upstream import create_app as create_upstream
from deploy.stack import Endpoints
from services.billing.main import create_app as create_billing
from services.billing.settings import BillingSettings
from services.console.main import create_app as create_console
from services.gateway.main import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.keys.main import create_app as create_keys
from services.keys.settings import KeysSettings
from services.metering.main import create_app as create_metering
from services.metering.settings import MeteringSettings
from tests.console.helpers import INTERNAL_TOKEN, TOKEN, console_settings
from tests.served import Served

REPO = Path(__file__).resolve().parents[2]


def service_settings(
    endpoints: Endpoints, schemas: tuple[str, str, str], topic_prefix: str, unique: str
) -> tuple[KeysSettings, MeteringSettings, BillingSettings]:
    """Settings of one key, metering and billing service on this test's schemas and topics."""
    common: dict[str, object] = {
        "kafka_bootstrap": endpoints.kafka_bootstrap,
        "database_url": endpoints.database_url,
        "admin_token": TOKEN,
        "topic_prefix": topic_prefix,
        "log_json": False,
        "log_level": "WARNING",
    }
    keys = KeysSettings.model_validate(
        {
            **common,
            "internal_token": INTERNAL_TOKEN,
            "db_schema": schemas[0],
            "consumer_group": f"keys-{unique}",
        }
    )
    metering = MeteringSettings.model_validate(
        {**common, "db_schema": schemas[1], "consumer_group": f"metering-{unique}"}
    )
    billing = BillingSettings.model_validate(
        {
            **common,
            "internal_token": INTERNAL_TOKEN,
            "db_schema": schemas[2],
            "consumer_group": f"billing-{unique}",
        }
    )
    return keys, metering, billing


@dataclass(frozen=True)
class System:
    """Where each part of the running system answers."""

    upstream: str
    keys: str
    metering: str
    billing: str
    gateway: str
    console: str


def demo_catalogue(folder: Path, upstream_url: str) -> Path:
    """The demo catalogue (models and prices), its upstream moved to upstream_url."""
    text = (REPO / "deploy" / "models.yaml").read_text()
    path = folder / "models.yaml"
    path.write_text(text.replace("http://127.0.0.1:8090/v1", upstream_url + "/v1"))
    return path


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
    """Upstream, keys, metering, billing, gateway and console, on this test's data."""
    keys, metering, billing = service_settings(endpoints, schemas, topic_prefix, unique)
    keys = keys.model_copy(update={"redis_url": endpoints.redis_url, "redis_prefix": redis_prefix})
    async with AsyncExitStack() as stack:

        async def serve(app: Any) -> str:
            served = await Served(app).start()
            stack.push_async_callback(served.stop)
            return served.url

        upstream = await serve(create_upstream())
        catalogue = demo_catalogue(folder, upstream)
        keys_url = await serve(create_keys(keys))
        metering_url = await serve(create_metering(metering))
        billing_url = await serve(create_billing(billing))
        gateway_url = await serve(
            create_gateway(
                GatewaySettings.model_validate(
                    {
                        "kafka_bootstrap": endpoints.kafka_bootstrap,
                        "redis_url": endpoints.redis_url,
                        "topic_prefix": topic_prefix,
                        "redis_prefix": redis_prefix,
                        "keys_url": keys_url,
                        "catalogue_path": catalogue,
                        "spool_dir": folder / "spool",
                        "internal_token": INTERNAL_TOKEN,
                        "log_json": False,
                        "log_level": "WARNING",
                    }
                )
            )
        )
        await _ready(gateway_url + "/readyz")
        console = create_console(
            console_settings(
                keys_url=keys_url,
                metering_url=metering_url,
                billing_url=billing_url,
                gateway_url=gateway_url,
                catalogue_path=catalogue,
                log_json=False,
                log_level="WARNING",
            )
        )
        console_url = await serve(console)
        yield System(upstream, keys_url, metering_url, billing_url, gateway_url, console_url)
