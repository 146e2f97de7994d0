"""Fixtures of the gateway tests: the demo upstream, a fake key service, gateways."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.demo_upstream import create_app as create_upstream
from deploy.stack import Endpoints
from tests.gateway.harness import (
    FakeKeyService,
    gateway_settings,
    start_gateway,
    write_catalogue,
)
from tests.metering.harness import schemas
from tests.served import Served

__all__ = ["schemas"]  # a metering and a billing schema of the test's own, dropped afterwards


@pytest.fixture(scope="session")
async def upstream() -> AsyncIterator[Served]:
    """The demo upstream, one for the session (tests compare its request count)."""
    served = await Served(create_upstream(embedding_dimensions=16)).start()
    yield served
    await served.stop()


@pytest.fixture
async def keyservice() -> AsyncIterator[tuple[FakeKeyService, Served]]:
    fake = FakeKeyService()
    served = await Served(fake.app()).start()
    yield fake, served
    await served.stop()


@pytest.fixture
def catalogue(tmp_path: Path, upstream: Served) -> Path:
    return write_catalogue(tmp_path, upstream.url + "/v1")


StartGateway = Callable[..., Awaitable[Served]]


@pytest.fixture
async def make_gateway(
    *,
    endpoints: Endpoints,
    topic_prefix: str,
    redis_prefix: str,
    keyservice: tuple[FakeKeyService, Served],
    catalogue: Path,
    tmp_path: Path,
) -> AsyncIterator[StartGateway]:
    """Start gateways on this test's topics and Redis prefix (overrides as keywords)."""
    started: list[Served] = []

    async def make(*, ready: bool = True, **overrides: Any) -> Served:
        options: dict[str, Any] = {
            "kafka": endpoints.kafka_bootstrap,
            "redis": endpoints.redis_url,
            "prefix": topic_prefix,
            "redis_prefix": redis_prefix,
            "keys_url": keyservice[1].url,
            "catalogue": catalogue,
            "spool": tmp_path / f"spool{len(started)}",
        }
        options.update(overrides)
        served = await start_gateway(gateway_settings(**options), ready=ready)
        started.append(served)
        return served

    yield make
    for served in started:
        await served.stop()


@pytest.fixture
async def gateway(make_gateway: StartGateway) -> Served:
    return await make_gateway()
