"""Failure tests 2 and 4 of issue 5: a consumer killed with SIGKILL, PostgreSQL restarted.

Both end with the Usage and Costs APIs equal to the events produced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.ports import free_port
from tests.metering.harness import ADMIN_TOKEN, INTERNAL_TOKEN, both, stats, stream_of
from tests.metering.ledgers import Case
from tests.polling import eventually
from tests.private_servers import Private

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_postgres_restarted_mid_stream(case: Case, private_postgres: Private) -> None:
    case = case.with_database(private_postgres.database_url)
    m_set, b_set = case.settings(max_batch=200)
    before, during, after = stream_of(3000), stream_of(2000, seed=7), stream_of(1000, seed=99)
    async with both(m_set, b_set) as (m, b):
        await case.produce(before)
        await eventually(lambda: stats(m), until=lambda s: s["applied"] > 0, what="progress")
        await private_postgres.astop()
        await case.produce(during)
        # Both consumers notice and keep retrying; nothing is skipped meanwhile.
        for client in (m, b):
            await eventually(
                lambda c=client: stats(c),  # type: ignore[misc]
                until=lambda s: s["status"] == "database unavailable" and s["db_retries"] > 0,
                what="outage seen",
            )
        r = await m.get(
            "/v1/projects/proj_0/usage",
            params={"start_time": 0},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "service_unavailable"
        await private_postgres.astart()
        await case.produce(after)
        await case.assert_ledgers(m, b, before + during + after)
        # Transient errors are retried, never taken for a record's fault.
        for c in (await stats(m), await stats(b)):
            assert (c["dead_letters"], c["refused"], c["stalled"]) == (0, 0, False), c


def _env(case: Case, service: str, schema: str) -> dict[str, str]:
    p = f"TOLLGATE_{service.upper()}_"
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        f"{p}KAFKA_BOOTSTRAP": case.bootstrap,
        f"{p}DATABASE_URL": case.database_url,
        f"{p}ADMIN_TOKEN": ADMIN_TOKEN,
        f"{p}INTERNAL_TOKEN": INTERNAL_TOKEN,  # to follow the admin key states
        f"{p}TOPIC_PREFIX": case.prefix,
        f"{p}DB_SCHEMA": schema,
        f"{p}CONSUMER_GROUP": f"{service}-{case.unique}",
        f"{p}CATALOGUE_PATH": str(case.catalogue_path),
        f"{p}MAX_BATCH": "100",
        f"{p}SESSION_TIMEOUT_MS": "6000",
        f"{p}LOG_LEVEL": "WARNING",
    }


@contextmanager
def _process(case: Case, service: str, schema: str, port: int, log: Path) -> Iterator[int]:
    """The service as `make up` runs it: uvicorn on the app factory, its own process."""
    argv = [sys.executable, "-m", "uvicorn", f"services.{service}.main:create_app"]
    argv += ["--factory", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=_env(case, service, schema), cwd=REPO, stdout=out, stderr=out
        )
    try:
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@asynccontextmanager
async def _client(port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

        async def healthy() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy, timeout=60, interval=0.2, what=f"service on {port}")
        yield client


async def _stored_offsets(case: Case, schema: str) -> int:
    conn = await asyncpg.connect(case.database_url)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".consumer_offsets')
        if exists is None:
            return 0
        return int(
            await conn.fetchval(
                f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".consumer_offsets'
            )
        )
    finally:
        await conn.close()


@pytest.mark.slow
async def test_consumers_killed_with_sigkill_mid_batch_and_restarted(
    case: Case, tmp_path: Path
) -> None:
    events = stream_of(12_000)
    await case.produce(events)
    ports = {"metering": free_port(), "billing": free_port()}
    schemas = dict(zip(("metering", "billing"), case.schemas, strict=True))
    with (
        _process(
            case, "metering", schemas["metering"], ports["metering"], tmp_path / "m.log"
        ) as m_pid,
        _process(
            case, "billing", schemas["billing"], ports["billing"], tmp_path / "b.log"
        ) as b_pid,
    ):
        # Kill each one once it is part way through the stream (100 records a transaction).
        for service, pid in (("metering", m_pid), ("billing", b_pid)):
            await eventually(
                lambda s=service: _stored_offsets(case, schemas[s]),  # type: ignore[misc]
                until=lambda n: n >= 300,
                timeout=60,
                interval=0.01,
                what=f"{service} progress",
            )
            os.kill(pid, signal.SIGKILL)
        for service in ports:
            stored = await _stored_offsets(case, schemas[service])
            assert 0 < stored < len(events), f"{service} was not killed mid-stream ({stored})"
    with (
        _process(case, "metering", schemas["metering"], ports["metering"], tmp_path / "m.log"),
        _process(case, "billing", schemas["billing"], ports["billing"], tmp_path / "b.log"),
    ):
        async with _client(ports["metering"]) as m, _client(ports["billing"]) as b:
            await case.assert_ledgers(m, b, events, timeout=90)
            # The restarted consumers resumed from PostgreSQL's offsets: nothing twice.
            assert (await stats(m))["duplicates"] == 0
