"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from deploy.stack import Endpoints


@pytest.fixture
async def drop_schemas(endpoints: Endpoints, unique: str) -> AsyncIterator[None]:
    yield
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        for service in ("keys", "metering", "billing"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "e2e_{unique}_{service}" CASCADE')
    finally:
        await conn.close()
