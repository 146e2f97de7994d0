"""Migrations moved between folders: schemas migrated before the move stay valid and end the same.

The exactly-once tables moved from each ledger service's first migration into the ledger
package's own (shared/exactly_once/migrations); the rewritten first migrations name the text they
replace. A schema where the first texts ran must still start, and end with the schema a new
database gets.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from deploy.stack import Endpoints
from services.billing.main import MIGRATIONS as BILLING
from services.metering.main import MIGRATIONS as METERING
from shared.db import MigrationError, MigrationSet, apply_migrations, create_pool, load_migrations

_REPLACES = re.compile(r"^-- replaces sha256:([0-9a-f]{64})", re.MULTILINE)


@pytest.fixture
async def old_schema(endpoints: Endpoints, pg_schema: str) -> AsyncIterator[str]:
    """A second schema of this test's own, dropped afterwards."""
    schema = f"{pg_schema}_old"
    yield schema
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _shape(pool: asyncpg.Pool, schema: str) -> dict[str, list[tuple[object, ...]]]:
    """Tables, columns, constraints and indexes of schema, with the schema's name left out."""
    columns = await pool.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
        schema,
    )
    constraints = await pool.fetch(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k"
        " JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 ORDER BY 1, 2",
        schema,
    )
    indexes = await pool.fetch(
        "SELECT tablename, indexname, replace(indexdef, schemaname || '.', '') FROM pg_indexes"
        " WHERE schemaname = $1 ORDER BY 1, 2",
        schema,
    )
    return {
        "columns": [tuple(r) for r in columns],
        "constraints": [tuple(r) for r in constraints],
        "indexes": [tuple(r) for r in indexes],
    }


async def _as_before_the_move(pool: asyncpg.Pool, schema: str, own: MigrationSet) -> list[int]:
    """Make schema what the service's migrations left before the move: the tables of every
    migration but the last, and ``schema_migrations`` with the first one's old checksum."""
    ledger, service = METERING[0], load_migrations(own.folder)
    before = service[:-1] if len(service) > 1 else service
    old = _REPLACES.findall(service[0].sql)
    assert len(old) == 1, "the first migration names the text it replaces"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # The old first text: the plumbing's tables (the same definitions), then the ledger's.
        await conn.execute(load_migrations(ledger.folder)[0].sql.replace(" IF NOT EXISTS", ""))
        for m in before:
            await conn.execute(m.sql)
            checksum = old[0] if m.version == 1 else m.checksum
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, $3)", m.version, m.name, checksum
            )
    return [m.version for m in service if m not in before]


@pytest.mark.parametrize("plan", [METERING, BILLING], ids=["metering", "billing"])
async def test_schema_migrated_before_the_move_starts_and_ends_as_a_new_one(
    endpoints: Endpoints, pg_schema: str, old_schema: str, plan: tuple[MigrationSet, ...]
) -> None:
    pool = await create_pool(endpoints.database_url, "public")
    try:
        await apply_migrations(pool, pg_schema, plan)
        left = await _as_before_the_move(pool, old_schema, plan[1])
        # The package's migrations find their tables there already (the first) or move them
        # on (the others); the service's go on.
        engine = [m.version for m in load_migrations(plan[0].folder)]
        assert await apply_migrations(pool, old_schema, plan) == [*engine, *left]
        assert await apply_migrations(pool, old_schema, plan) == []
        new, old = await _shape(pool, pg_schema), await _shape(pool, old_schema)
        assert new == old
        tables = {c[0] for c in new["columns"]}
        assert {"processed_events", "consumer_offsets", "ledger_schema_migrations"} <= tables
    finally:
        await pool.close()


async def test_rewritten_migration_must_name_the_text_it_replaces(
    endpoints: Endpoints, pg_schema: str, tmp_path: Path
) -> None:
    first, shared, own = tmp_path / "first", tmp_path / "shared", tmp_path / "own"
    for folder in (first, shared, own):
        folder.mkdir()
    (first / "0001_things.sql").write_text("CREATE TABLE a (id int); CREATE TABLE b (id int);")
    (shared / "0001_a.sql").write_text("CREATE TABLE IF NOT EXISTS a (id int);")
    pool = await create_pool(endpoints.database_url, pg_schema)
    try:
        await apply_migrations(pool, pg_schema, first)
        plan = (MigrationSet(shared, "shared_migrations"), MigrationSet(own))
        (own / "0001_things.sql").write_text("CREATE TABLE b (id int);")
        with pytest.raises(MigrationError, match="edited"):
            await apply_migrations(pool, pg_schema, plan)
        old = load_migrations(first)[0].checksum
        (own / "0001_things.sql").write_text(f"-- replaces sha256:{old}\nCREATE TABLE b (id int);")
        assert await apply_migrations(pool, pg_schema, plan) == [1]
        # The older release's text still matches what is recorded: its replicas start too.
        assert await apply_migrations(pool, pg_schema, first) == []
    finally:
        await pool.close()
