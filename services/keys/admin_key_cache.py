"""Admin key states by hash, per process: a management call checks its admin key without a
network round trip on the warm path, and a revocation reaches every replica within a second.

Why this shape: the key service owns the admin keys' table, so PostgreSQL is the one source
(Kafka is not on the path: a revocation must not wait for it, nor for Redis). Each change to
an admin key NOTIFYs ``<schema>_admin_keys`` with its id in the changing transaction, so the
notification arrives at every replica's listener only once the change committed, within
milliseconds, and the entry is dropped. Two backstops bound what a lost notification could
cost: an entry lives ``ttl_s`` at most (1 s by default: a revocation's bound, even when a
listener's connection died without the process noticing), and while the listener is not
connected nothing is cached (every check reads the database). A read that raced a
notification is not cached either (a generation counter), so a check never brings a revoked
state back. Unknown hashes are cached as such (an invented key costs one query per ``ttl_s``),
within ``max_entries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from services.keys import admin_key_repository as repo
from services.keys.rows import Row
from shared.events import AdminKeyState
from shared.exactly_once.retry import READ_ERRORS
from shared.worker import Backoff, Worker

log = logging.getLogger(__name__)
PROBE_S = 5.0
NEW_KEY = "new:"  # a notification's prefix when the admin key was just created


def admin_key_state(row: Row) -> AdminKeyState:
    """An admin key row's whole state, as caches hold it (never the secret)."""
    return AdminKeyState(
        id=row["id"],
        name=row["name"],
        hint=row["hint"],
        key_hash=row["key_hash"],
        status=row["status"],
        organization=row["organization"],
        project_ids=tuple(row["project_ids"]),
        permissions=tuple(row["permissions"]),
        version=row["version"],
    )


class AdminKeyCache:
    """Admin key states by hash, dropped on a change's NOTIFY, aged out after ``ttl_s``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        dsn: str,
        schema: str,
        channel: str,
        ttl_s: float,
        max_entries: int = 10_000,
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.schema = schema
        self.channel = channel
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.listening = False
        self.hits = 0
        self.misses = 0
        self.invalidations = 0
        self._entries: dict[str, tuple[float, AdminKeyState | None]] = {}
        self._generation = 0  # moved by every notification and every (re)connection
        self.on_change: Callable[[str], None] | None = None  # told each notified admin key id
        self.worker = Worker(
            "keys-admin-key-listener",
            self._listen,
            expected=READ_ERRORS,
            backoff=Backoff(0.2, 5.0),
            on_error=self._lost,
        )

    def stats(self) -> dict[str, Any]:
        """What /readyz reports about the cache."""
        return {
            "admin_key_cache_listening": self.listening,
            "admin_key_cache_entries": len(self._entries),
            "admin_key_cache_hits": self.hits,
            "admin_key_cache_misses": self.misses,
            "admin_key_cache_invalidations": self.invalidations,
        }

    async def get(self, key_hash: str) -> AdminKeyState | None:
        """The state of the admin key with this hash (revoked ones too), or None."""
        entry = self._entries.get(key_hash)
        if entry is not None and time.monotonic() - entry[0] < self.ttl_s:
            self.hits += 1
            return entry[1]
        self.misses += 1
        generation = self._generation
        async with self.pool.acquire() as conn:
            row = await repo.authenticate(conn, key_hash)
        state = None if row is None else admin_key_state(row)
        if self.listening and generation == self._generation:
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))  # the oldest
            self._entries[key_hash] = (time.monotonic(), state)
        return state

    def forget(self, key_id: str) -> None:
        """Drop the entries of that admin key (its old and new hashes alike)."""
        self._generation += 1
        self.invalidations += 1
        for key_hash in [h for h, (_, s) in self._entries.items() if s and s.id == key_id]:
            del self._entries[key_hash]

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def start(self) -> None:
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop(grace_s=2.0)
        self.listening = False
        self.clear()

    def _lost(self, _: Exception) -> None:
        self.listening = False
        self.clear()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        if not text.startswith(NEW_KEY):  # a new key: nothing cached can be stale
            self.forget(text)
        if self.on_change is not None:
            self.on_change(text.removeprefix(NEW_KEY))

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        try:
            await conn.add_listener(self.channel, self._notified)
            # Whatever was read before this connection listened may have missed a change.
            self.clear()
            self.listening = True
            self.worker.succeeded()
            while not self.worker.stopping.is_set():
                if await self.worker.pause(PROBE_S):
                    return
                # A connection that died quietly is found here, not at the next change.
                await asyncio.wait_for(conn.fetchval("SELECT 1"), PROBE_S)
        finally:
            self.listening = False
            self.clear()
            with contextlib.suppress(*READ_ERRORS):
                await asyncio.wait_for(conn.close(), 2)
