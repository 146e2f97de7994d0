"""Failure test 6, the hard case: the connection is lost after COMMIT succeeded on the server.

A TCP proxy between the services and PostgreSQL lets some COMMITs through, waits for the
server's answer, and then cuts the connection instead of passing the answer on. The
transaction is committed but the consumer sees a lost connection: it retries the batch,
finds every event id already claimed, and counts nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.metering.harness import both, stats, stream_of
from tests.metering.ledgers import Case


class CommitCutter:
    """A PostgreSQL proxy that drops the answer to every ``every``-th COMMIT, and the line."""

    def __init__(self, upstream_host: str, upstream_port: int, every: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.every = every
        self.armed = False
        self.commits = 0
        self.cut = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        cut_next_answer = asyncio.Event()

        async def to_server() -> None:
            while data := await client_r.read(65536):
                # asyncpg ends a transaction with a simple query "COMMIT;".
                if self.armed and b"COMMIT" in data:
                    self.commits += 1
                    if self.commits % self.every == 0:
                        cut_next_answer.set()
                server_w.write(data)
                await server_w.drain()

        async def to_client() -> None:
            while data := await server_r.read(65536):
                if cut_next_answer.is_set():
                    # The server has committed and answered: the client never hears it.
                    self.cut += 1
                    return
                client_w.write(data)
                await client_w.drain()

        pumps = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def cutter(case: Case) -> AsyncIterator[tuple[CommitCutter, str]]:
    parts = urlsplit(case.database_url)
    assert parts.hostname
    assert parts.port
    proxy = CommitCutter(parts.hostname, parts.port, every=4)
    port = await proxy.start()
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{port}"
    yield proxy, urlunsplit(parts._replace(netloc=netloc))
    await proxy.stop()


async def test_commit_acknowledgement_lost_is_retried_without_doubling(
    case: Case, cutter: tuple[CommitCutter, str]
) -> None:
    proxy, proxied_url = cutter
    events = stream_of(3000)
    # The services talk through the proxy; the test reads the ledgers through it too,
    # but only the services' batch transactions commit, so only theirs are cut.
    m_set, b_set = case.with_database(proxied_url).settings(max_batch=200)
    async with both(m_set, b_set) as (m, b):
        proxy.armed = True  # after the migrations: only batch transactions are cut
        await case.produce(events)
        await case.assert_ledgers(m, b, events)
        counters = [await stats(m), await stats(b)]
    assert proxy.cut >= 2, proxy.cut
    # A retry after a cut found its events already claimed: the commit had gone through.
    assert sum(c["duplicates"] for c in counters) > 0, counters
    assert sum(c["db_retries"] for c in counters) >= proxy.cut, counters
    assert all(c["dead_letters"] == 0 for c in counters), counters
