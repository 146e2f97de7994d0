"""Fixtures of the tests on the secured engines: the engines, and the whole system on them
(``system``, so that the end-to-end tests of tests/e2e run here as they are)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from deploy.endpoints import Endpoints
from deploy.secure import SecureEngines, SecurePorts
from deploy.stack import DEFAULT_RUN_DIR
from tests.e2e.system import System, start_system


@pytest.fixture(scope="session")
def engines() -> SecureEngines:
    """The secured engines of the run folder, started when they do not run (and left
    running, as the plain stack is: `make down` stops them)."""
    found = SecureEngines(DEFAULT_RUN_DIR, SecurePorts.from_env())
    found.up()
    return found


def secured_settings(engines: SecureEngines, unique: str) -> dict[str, dict[str, str]]:
    """Each service's settings on the secured engines: its own users; the topics without a
    prefix (the ACLs name them), its Redis keys under Tollgate's prefix."""
    out: dict[str, dict[str, str]] = {}
    for service in ("keys", "gateway", "metering", "billing"):
        own = engines.service_settings(service) | {"TOPIC_PREFIX": ""}
        if service in ("keys", "gateway"):
            own["REDIS_PREFIX"] = f"tollgate:e2e:{unique}:"
        out[service] = own
    return out


@pytest.fixture
def secured_system(engines: SecureEngines, unique: str, tmp_path: Path) -> Iterator[System]:
    """The system's processes on the secured engines, each service with its own credentials."""
    base = Endpoints(engines.kafka.bootstrap, engines.postgres.dsn, engines.redis.url)
    started = start_system(base, "", unique, tmp_path, settings=secured_settings(engines, unique))
    yield started
    started.stop()


@pytest.fixture
def system(secured_system: System) -> System:
    """tests/e2e's ``system``, here on the secured engines."""
    return secured_system


@pytest.fixture
async def drop_schemas(engines: SecureEngines, unique: str) -> AsyncIterator[None]:
    """tests/e2e's cleanup: each service's schema of the test, dropped by its owner."""
    yield
    for service in ("keys", "metering", "billing"):
        conn = await asyncpg.connect(engines.postgres.dsn_of(service))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "e2e_{unique}_{service}" CASCADE')
        finally:
            await conn.close()
