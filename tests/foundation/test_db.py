"""Migrations on the real PostgreSQL: applied once, in order, per schema; edits detected."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from deploy.stack import Endpoints
from shared.db import MigrationError, apply_migrations, create_pool, load_migrations


def _write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


async def test_migrations_applied_twice_are_a_no_op(
    endpoints: Endpoints, pg_schema: str, tmp_path: Path
) -> None:
    _write(tmp_path, "0001_things.sql", "CREATE TABLE things (id int PRIMARY KEY);")
    _write(tmp_path, "0002_more.sql", "ALTER TABLE things ADD COLUMN name text;")
    pool = await create_pool(endpoints.database_url, pg_schema)
    try:
        assert await apply_migrations(pool, pg_schema, tmp_path) == [1, 2]
        assert await apply_migrations(pool, pg_schema, tmp_path) == []
        await pool.execute("INSERT INTO things (id, name) VALUES (1, 'a')")
        table = await pool.fetchval(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'things'"
            " AND table_schema = $1",
            pg_schema,
        )
        assert table == pg_schema
    finally:
        await pool.close()


async def test_edited_migration_is_refused(
    endpoints: Endpoints, pg_schema: str, tmp_path: Path
) -> None:
    _write(tmp_path, "0001_things.sql", "CREATE TABLE things (id int PRIMARY KEY);")
    pool = await create_pool(endpoints.database_url, pg_schema)
    try:
        await apply_migrations(pool, pg_schema, tmp_path)
        _write(tmp_path, "0001_things.sql", "CREATE TABLE things (id bigint PRIMARY KEY);")
        with pytest.raises(MigrationError, match="edited"):
            await apply_migrations(pool, pg_schema, tmp_path)
    finally:
        await pool.close()


async def test_failed_migration_leaves_nothing_behind(
    endpoints: Endpoints, pg_schema: str, tmp_path: Path
) -> None:
    _write(tmp_path, "0001_ok.sql", "CREATE TABLE ok (id int);")
    _write(tmp_path, "0002_broken.sql", "CREATE TABLE broken (id nosuchtype);")
    pool = await create_pool(endpoints.database_url, pg_schema)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await apply_migrations(pool, pg_schema, tmp_path)
        exists = await pool.fetchval("SELECT to_regclass($1)", f"{pg_schema}.ok")
        assert exists is None
    finally:
        await pool.close()


@pytest.mark.unit
def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "create_things.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"0001_name\.sql"):
        load_migrations(tmp_path)
