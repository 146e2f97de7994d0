"""`python -m deploy.migrate` (compose's one-shot `migrate`): every service's migrations applied
once, into the schemas the services' settings name, and nothing on a second run."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from deploy.endpoints import Endpoints
from deploy.migrate import SCHEMAS, migrate
from services.billing.main import MIGRATIONS as BILLING
from services.keys.main import MIGRATIONS as KEYS
from services.metering.main import MIGRATIONS as METERING
from shared.db import MigrationSet, load_migrations


def _versions(declared: Path | MigrationSet | tuple[MigrationSet, ...]) -> list[int]:
    """Every version a service declares, set by set, as apply_migrations applies them."""
    sets = declared if isinstance(declared, tuple) else (declared,)
    folders = [s.folder if isinstance(s, MigrationSet) else s for s in sets]
    return [m.version for folder in folders for m in load_migrations(folder)]


async def test_migrate_applies_each_service_once(
    endpoints: Endpoints, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    schemas = {service: f"mig_{service}_{unique}" for service in SCHEMAS}
    for service, schema in schemas.items():
        monkeypatch.setenv(f"TOLLGATE_{service.upper()}_DB_SCHEMA", schema)
    try:
        first = await migrate(endpoints.database_url)
        for service, declared in (("keys", KEYS), ("metering", METERING), ("billing", BILLING)):
            assert first[service] == _versions(declared), service
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
