"""Apply every service's migrations once: ``python -m deploy.migrate`` (compose's ``migrate``).

The key service, metering and billing each apply their schema's migrations at start too
(under an advisory lock, so replicas never race), but a one-shot run before any of them
starts means a schema change fails once, in one place, and no replica starts on a schema it
has not seen. Each service's migrations are the ones its composition root declares
(``services.<name>.main.MIGRATIONS``: a folder, or the ledger plumbing's set then its own),
so this applies exactly what the service would. The database URL is
``TOLLGATE_MIGRATE_DATABASE_URL``; each schema is the one its service's settings name by
default, or ``TOLLGATE_<SERVICE>_DB_SCHEMA``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time

import asyncpg

from shared.db import apply_migrations, create_pool

SCHEMAS = {"keys": "keys", "metering": "metering", "billing": "billing"}
CONNECT_FOR_S = 60.0  # a database still starting is waited for, not failed on


async def _pool(database_url: str, schema: str) -> asyncpg.Pool:
    deadline = time.monotonic() + CONNECT_FOR_S
    while True:
        try:
            return await create_pool(
                database_url, schema, max_size=1, application="tollgate-migrate"
            )
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def migrate(database_url: str) -> dict[str, list[int]]:
    """Apply what is new in each service's declared migrations; the versions applied, by service."""
    applied: dict[str, list[int]] = {}
    for service, default in SCHEMAS.items():
        schema = os.environ.get(f"TOLLGATE_{service.upper()}_DB_SCHEMA", default)
        pool = await _pool(database_url, schema)
        try:
            declared = importlib.import_module(f"services.{service}.main").MIGRATIONS
            applied[service] = await apply_migrations(pool, schema, declared)
        finally:
            await pool.close()
    return applied


def main() -> int:
    """Command line: migrate, print what was applied."""
    url = os.environ.get("TOLLGATE_MIGRATE_DATABASE_URL")
    if not url:
        print("error: set TOLLGATE_MIGRATE_DATABASE_URL", file=sys.stderr)
        return 2
    for service, versions in asyncio.run(migrate(url)).items():
        print(f"{service:9} {'applied ' + str(versions) if versions else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
