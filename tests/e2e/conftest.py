"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from deploy.stack import Endpoints
from tests.e2e.system import System, start_system


@pytest.fixture
def system(
    endpoints: Endpoints, topic_prefix: str, unique: str, tmp_path: Path
) -> Iterator[System]:
    started = start_system(endpoints, topic_prefix, unique, tmp_path)
    yield started
    started.stop()


@pytest.fixture
async def drop_schemas(endpoints: Endpoints, unique: str) -> AsyncIterator[None]:
    yield
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        for service in ("keys", "metering", "billing"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "e2e_{unique}_{service}" CASCADE')
    finally:
        await conn.close()
