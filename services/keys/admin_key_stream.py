"""Every admin key's state, kept in memory and streamed to the services that check admin keys
too (metering and billing: ``shared/admin_key_follower.py`` follows the stream).

Why a stream from here: the key service owns the admin keys' table, so it is the one source;
a follower holds every state in memory, so checking an admin key there costs no round trip;
and a revocation reaches it in milliseconds with Kafka down (Kafka is not on this path) and
Redis down (nor is Redis). The follower refuses admin keys (503) when its stream has been
silent for a second, so it never acts on states older than that.

How the states are kept current: every ``sync_s`` (and at once on a change's NOTIFY, which the
admin key cache's listener relays) one cheap query reads the table's fingerprint, the count of
admin keys and the sum of their versions (every change moves a version up); only when it moved
are the rows read again, and each state with a newer version goes to every open stream. So a
lost notification costs at most ``sync_s``, not a stale state. ``fresh()`` says the last sync
succeeded within ``fresh_s``; while it does not, the streams send nothing (no heartbeat), and
the followers go stale within their own second.

The stream (``GET /internal/v1/admin_key_states``, internal token; JSON Lines): first
``{"type": "snapshot", "states": [...]}`` (the active keys), then ``{"type": "state",
"state": {...}}`` per change and ``{"type": "ping"}`` every ``heartbeat_s``. A follower that
reads too slowly (``max_queued`` lines waiting) is cut off, and gets a new snapshot when it
reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from services.keys import admin_key_repository as repo
from services.keys.admin_key_cache import admin_key_state
from services.keys.errors import DatabaseUnavailable
from services.keys.settings import KeysSettings
from shared.events import AdminKeyState
from shared.exactly_once.retry import READ_ERRORS
from shared.http import require_bearer
from shared.http_server import draining
from shared.openapi import error_responses
from shared.worker import Backoff, Worker

log = logging.getLogger(__name__)
PING = b'{"type":"ping"}\n'
_CLOSE = b""  # put on a follower's queue: its stream ends


def _line(kind: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": kind, **payload}) + b"\n"


def state_line(state: AdminKeyState) -> bytes:
    """One change, as a stream carries it."""
    return _line("state", {"state": state.model_dump(mode="json")})


class AdminKeyStates:
    """Every admin key's newest state, synced from the table, fanned out to the streams."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        sync_s: float = 0.25,
        fresh_s: float = 0.75,
        heartbeat_s: float = 0.25,
        max_queued: int = 10_000,
    ) -> None:
        self.pool = pool
        self.sync_s = sync_s
        self.fresh_s = fresh_s
        self.heartbeat_s = heartbeat_s
        self.max_queued = max_queued
        self.states: dict[str, AdminKeyState] = {}
        self.syncs = 0
        self.reads = 0
        self.cut_off = 0
        self._fingerprint: tuple[int, int] | None = None
        self._synced_at = float("-inf")
        self._followers: set[asyncio.Queue[bytes]] = set()
        self._wake = asyncio.Event()
        self.worker = Worker(
            "keys-admin-key-states",
            self._sync_forever,
            expected=READ_ERRORS,
            backoff=Backoff(0.1, 2.0),
        )

    def stats(self) -> dict[str, Any]:
        """What /readyz reports about the states and their followers."""
        return {
            "admin_key_states_fresh": self.fresh(),
            "admin_key_states": len(self.states),
            "admin_key_state_followers": len(self._followers),
            "admin_key_state_reads": self.reads,
            "admin_key_state_followers_cut_off": self.cut_off,
        }

    def fresh(self) -> bool:
        """The last sync succeeded within ``fresh_s``: what is held is at most that old."""
        return time.monotonic() - self._synced_at < self.fresh_s

    def changed(self, _key_id: str) -> None:
        """A change was notified: sync now rather than at the next tick."""
        self._wake.set()

    async def sync(self) -> None:
        """Read the fingerprint; when it moved, read every state and pass on the newer ones."""
        async with self.pool.acquire() as conn:
            fingerprint = await repo.fingerprint(conn)
            if fingerprint != self._fingerprint:
                rows = await repo.all_admin_keys(conn)
                self.reads += 1
                self._apply(admin_key_state(row) for row in rows)
                self._fingerprint = (len(rows), sum(row["version"] for row in rows))
        self.syncs += 1
        self._synced_at = time.monotonic()

    def _apply(self, states: Iterable[AdminKeyState]) -> None:
        for state in states:
            held = self.states.get(state.id)
            if held is not None and held.version >= state.version:
                continue
            self.states[state.id] = state
            self._send(state_line(state))

    def _send(self, line: bytes) -> None:
        for queue in list(self._followers):
            if queue.qsize() >= self.max_queued:
                # Too slow: cut it off (it reconnects and gets a snapshot) rather than grow.
                self._followers.discard(queue)
                self.cut_off += 1
                queue.put_nowait(_CLOSE)
            else:
                queue.put_nowait(line)

    def follow(self) -> tuple[bytes, asyncio.Queue[bytes]]:
        """A snapshot line of the active keys, and the queue of every change after it (taken
        together, with no await between: nothing falls between the two)."""
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._followers.add(queue)
        active = [s.model_dump(mode="json") for s in self.states.values() if s.status == "active"]
        return _line("snapshot", {"states": active}), queue

    def unfollow(self, queue: asyncio.Queue[bytes]) -> None:
        self._followers.discard(queue)

    async def lines(
        self, snapshot: bytes, queue: asyncio.Queue[bytes], server: tuple[str, int] | None = None
    ) -> AsyncGenerator[bytes, None]:
        """What one stream sends: the snapshot, then changes and pings, until it is cut off
        or the server (at that address) shuts down."""
        try:
            yield snapshot
            while not draining(server):
                line: bytes | None
                try:
                    line = await asyncio.wait_for(queue.get(), self.heartbeat_s)
                except TimeoutError:
                    line = PING if self.fresh() else None
                if line == _CLOSE:
                    return
                if line is not None:
                    yield line
        finally:
            self.unfollow(queue)

    def start(self) -> None:
        self.worker.start()

    async def stop(self) -> None:
        for queue in list(self._followers):
            queue.put_nowait(_CLOSE)
        self._followers.clear()
        await self.worker.stop(grace_s=2.0)

    async def _sync_forever(self) -> None:
        while not self.worker.stopping.is_set():
            await self.sync()
            self.worker.succeeded()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sync_s)


def admin_key_states_router(settings: KeysSettings) -> APIRouter:
    """``GET /internal/v1/admin_key_states``: the stream, for the services' internal token."""
    router = APIRouter(
        prefix="/internal/v1",
        dependencies=[Depends(require_bearer(settings.internal_token, "internal token"))],
    )

    @router.get(
        "/admin_key_states",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "JSON Lines: a snapshot, then each change and a ping every "
                "heartbeat, until the follower hangs up (see the module's docstring)",
                "content": {"application/jsonl": {"schema": {"type": "string"}}},
            },
            **error_responses(401, 503),
        },
    )
    async def stream(request: Request) -> StreamingResponse:
        """Every active admin key's state, then each change, as JSON Lines (see module doc)."""
        states: AdminKeyStates = request.app.state.admin_key_states
        if not states.fresh():
            raise DatabaseUnavailable("The admin key states are not current; retry shortly.")
        snapshot, queue = states.follow()
        return StreamingResponse(
            states.lines(snapshot, queue, request.scope.get("server")),
            media_type="application/jsonl",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
