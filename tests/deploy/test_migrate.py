"""`python -m deploy.migrate` (compose's one-shot `migrate`): every service's migrations applied
once, into the schemas the services' settings name, and nothing on a second run."""

from __future__ import annotations

import asyncpg
import pytest

from deploy.migrate import SCHEMAS, SERVICES, migrate
from deploy.stack import Endpoints
from shared.db import load_migrations


async def test_migrate_applies_each_service_once(
    endpoints: Endpoints, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    schemas = {service: f"mig_{service}_{unique}" for service in SCHEMAS}
    for service, schema in schemas.items():
        monkeypatch.setenv(f"TOLLGATE_{service.upper()}_DB_SCHEMA", schema)
    try:
        first = await migrate(endpoints.database_url)
        for service in SCHEMAS:
            versions = [m.version for m in load_migrations(SERVICES / service / "migrations")]
            assert first[service] == versions, service
        assert await migrate(endpoints.database_url) == {service: [] for service in SCHEMAS}
        conn = await asyncpg.connect(endpoints.database_url)
        try:
            keys_tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                schemas["keys"],
            )
        finally:
            await conn.close()
        assert {"api_keys", "projects", "outbox"} <= {r["table_name"] for r in keys_tables}
    finally:
        conn = await asyncpg.connect(endpoints.database_url)
        try:
            for schema in schemas.values():
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
