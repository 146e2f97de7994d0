"""PostgreSQL plumbing: one pool per service, bound to its own schema, and versioned migrations.

Migrations are SQL files named ``NNNN_what.sql`` in a service's ``migrations/`` folder. They
are applied at service start, in order, all in one transaction, under an advisory lock
so that replicas starting together apply each one exactly once. Table names in them are
unqualified: the schema comes from the search path, so tests can give each run its own.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed, or one already applied has been edited since."""


@dataclass(frozen=True)
class Migration:
    """One SQL file of a service's migrations folder."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def check_schema_name(schema: str) -> str:
    """Return schema if it is a plain lower-case identifier, else raise ValueError."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"not a valid schema name: {schema!r}")
    return schema


def load_migrations(folder: Path) -> list[Migration]:
    """The migrations in folder, ordered by version."""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path}")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version in {folder}")
    return found


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10, application: str = "tollgate"
) -> asyncpg.Pool:
    """A connection pool whose search path is the service's schema."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": check_schema_name(schema), "application_name": application},
    )
    assert pool is not None
    return pool


async def apply_migrations(pool: asyncpg.Pool, schema: str, folder: Path) -> list[int]:
    """Apply the migrations of folder not yet applied to schema; return the versions applied."""
    check_schema_name(schema)
    migrations = load_migrations(folder)
    applied_now: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        # One migrator at a time per schema, across every replica and process.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch(f'SELECT version, checksum FROM "{schema}".schema_migrations')
        done = {r["version"]: r["checksum"] for r in rows}
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was edited after it was applied to {schema}"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
    return applied_now
