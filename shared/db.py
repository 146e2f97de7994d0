"""PostgreSQL plumbing: one pool per service, bound to its own schema, and versioned migrations.

Migrations are SQL files named ``NNNN_what.sql`` in a service's ``migrations/`` folder. They
are applied at service start, in order, all in one transaction, under an advisory lock
so that replicas starting together apply each one exactly once. Table names in them are
unqualified: the schema comes from the search path, so tests can give each run its own.

Several folders may share one schema (``MigrationSet``: a shared package's tables, then the
service's own): each has its own versions, recorded in its own table, so a replica of an
older release, which knows only ``schema_migrations``, still starts against the schema.

An applied migration is compared with its file by checksum, and an edited one is refused. A
migration may be *rewritten* without changing the schema it leaves (part of it moved into a
set applied before it): it then says so on a line of its own, ``-- replaces sha256:<hex>``,
naming the checksum of the text it replaces, and schemas where that text ran stay valid (their
recorded checksum is kept, so the older release's replicas start too).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.engine_checks import database_refusal, refused_at_start

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_REPLACES = re.compile(r"^-- replaces sha256:([0-9a-f]{64})\b", re.MULTILINE)


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

    @property
    def accepted(self) -> frozenset[str]:
        """Checksums an applied copy may carry: this text's, and those of the texts it replaces."""
        return frozenset({self.checksum, *_REPLACES.findall(self.sql)})


@dataclass(frozen=True)
class MigrationSet:
    """A migrations folder, and the table of the schema that records which of its versions ran."""

    folder: Path
    table: str = "schema_migrations"


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
    """A connection pool whose search path is the service's schema; EngineRefused (logged in
    one line) for a refusal no retry mends: a certificate not trusted, credentials refused."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            server_settings={
                "search_path": check_schema_name(schema),
                "application_name": application,
            },
        )
    except (OSError, asyncpg.PostgresError) as exc:
        refusal = database_refusal(exc)
        if refusal is None:
            raise
        refused_at_start(refusal)
        raise refusal from exc
    assert pool is not None
    return pool


async def apply_migrations(
    pool: asyncpg.Pool, schema: str, migrations: Path | MigrationSet | Sequence[MigrationSet]
) -> list[int]:
    """Apply the migrations not yet applied to schema, set by set; return the versions applied."""
    check_schema_name(schema)
    if isinstance(migrations, Path):
        migrations = MigrationSet(migrations)
    sets = [migrations] if isinstance(migrations, MigrationSet) else list(migrations)
    loaded = [(check_schema_name(s.table), load_migrations(s.folder)) for s in sets]
    applied_now: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        # One migrator at a time per schema, across every replica and process.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for table, found in loaded:
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}"."{table}" ('
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = await conn.fetch(f'SELECT version, checksum FROM "{schema}"."{table}"')
            done = {r["version"]: r["checksum"] for r in rows}
            for migration in found:
                if migration.version in done:
                    if done[migration.version] not in migration.accepted:
                        raise MigrationError(
                            f"migration {migration.name} was edited after it was applied to"
                            f" {schema}"
                        )
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    f'INSERT INTO "{table}" (version, name, checksum) VALUES ($1, $2, $3)',
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
                applied_now.append(migration.version)
    return applied_now
