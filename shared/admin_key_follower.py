"""Every active admin key's state in this process, followed from the key service's stream, so
that metering, billing and the console check an admin key with no round trip.

The key service streams (``GET /internal/v1/admin_key_states``, services/keys/
admin_key_stream.py) a snapshot of the active admin keys, then each change within
milliseconds of its commit, and a ping four times a second while what it holds is current.
This follower keeps them by hash. It answers only while it heard from the stream within
``stale_s`` (one second by default): past that (the key service away, the stream cut, its
database away) a check is refused with 503 rather than answered from states that may miss a
revocation. The operator token never depends on it. A lost stream is reconnected with a
back-off, and its snapshot replaces all that was held.

A key the follower does not know may be one created a moment ago, its state still on its way:
a check waits for the stream's next line (at most ``wait_s``, a quarter second) and looks
again before it refuses; a secret it saw end (revoked, or rotated away) is refused at once.
The wait holds only that request; the HTTP server's connection limit bounds how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
import orjson
from pydantic import SecretStr, ValidationError

from shared.errors import ServiceUnavailable
from shared.events import AdminKeyState
from shared.worker import Backoff, Worker

log = logging.getLogger(__name__)
STREAM_PATH = "/internal/v1/admin_key_states"
ENDED_MAX = 10_000


class AdminKeysUnavailable(ServiceUnavailable):
    """The follower has not heard from the key service recently enough to trust its states."""

    code = "admin_keys_unavailable"


class StreamRefused(Exception):
    """The key service answered the stream with an error status (a wrong token, say)."""


class StreamEnded(Exception):
    """The key service ended the stream (a restart, or this follower read too slowly)."""


FOLLOW_ERRORS = (httpx.HTTPError, StreamRefused, StreamEnded, orjson.JSONDecodeError)


class AdminKeyFollower:
    """Active admin key states by hash, as the key service streams them."""

    def __init__(
        self,
        keys_url: str,
        token: SecretStr,
        *,
        stale_s: float = 1.0,
        wait_s: float = 0.25,
        connect_timeout_s: float = 2.0,
        name: str = "admin-key-follower",
    ) -> None:
        self.url = keys_url.rstrip("/") + STREAM_PATH
        self.token = token
        self.stale_s = stale_s
        self.wait_s = wait_s
        self.connect_timeout_s = connect_timeout_s
        self.by_hash: dict[str, AdminKeyState] = {}
        self._hash_of: dict[str, str] = {}  # admin key id -> the hash held for it
        self._ended: dict[str, None] = {}  # secrets seen end, oldest first
        self._heard_at = float("-inf")
        self._heard = asyncio.Event()
        self.snapshots = 0
        self.changes = 0
        self.refusals = 0
        self.worker = Worker(name, self._follow, expected=FOLLOW_ERRORS, backoff=Backoff(0.1, 2.0))

    def current(self) -> bool:
        """Heard from the stream within ``stale_s``."""
        return time.monotonic() - self._heard_at < self.stale_s

    def stats(self) -> dict[str, Any]:
        """What /readyz reports about the follower."""
        return {
            "admin_keys_current": self.current(),
            "admin_keys_held": len(self.by_hash),
            "admin_key_snapshots": self.snapshots,
            "admin_key_changes": self.changes,
            "admin_key_checks_refused_stale": self.refusals,
        }

    async def active(self, key_hash: str) -> AdminKeyState | None:
        """The active admin key with this hash, or None; AdminKeysUnavailable (503) when the
        stream has been silent past ``stale_s``."""
        self._require_current()
        state = self.by_hash.get(key_hash)
        if state is None and key_hash not in self._ended:
            # Perhaps created a moment ago: its state may be a line away.
            self._heard.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heard.wait(), self.wait_s)
            self._require_current()
            state = self.by_hash.get(key_hash)
        return state

    def _require_current(self) -> None:
        if not self.current():
            self.refusals += 1
            raise AdminKeysUnavailable(
                "Admin keys cannot be checked right now: this service has not heard from the "
                "key service within a second. Retry shortly; the operator token still works."
            )

    def take(self, line: bytes) -> None:
        """Apply one line of the stream (a snapshot, a change or a ping)."""
        message = orjson.loads(line)
        kind = message.get("type")
        if kind == "snapshot":
            states = [AdminKeyState.model_validate(s) for s in message["states"]]
            self.by_hash = {s.key_hash: s for s in states if s.status == "active"}
            self._hash_of = {s.id: s.key_hash for s in self.by_hash.values()}
            self.snapshots += 1
        elif kind == "state":
            self._change(AdminKeyState.model_validate(message["state"]))
        self._heard_at = time.monotonic()
        self._heard.set()

    def _change(self, state: AdminKeyState) -> None:
        held_hash = self._hash_of.get(state.id)
        held = self.by_hash.get(held_hash) if held_hash else None
        if held is not None and held.version >= state.version:
            return
        if held_hash is not None:
            # Its former secret (a rotation) or itself (a revocation) stops here.
            self.by_hash.pop(held_hash, None)
            del self._hash_of[state.id]
            self._ended_now(held_hash)
        if state.status == "active":
            self.by_hash[state.key_hash] = state
            self._hash_of[state.id] = state.key_hash
        else:
            self._ended_now(state.key_hash)
        self.changes += 1

    def _ended_now(self, key_hash: str) -> None:
        """Remember a secret that ended (revoked, rotated away): refused without the wait an
        unknown one gets. Bounded: the oldest are forgotten (and then wait, as unknown)."""
        self._ended[key_hash] = None
        if len(self._ended) > ENDED_MAX:
            del self._ended[next(iter(self._ended))]

    def start(self) -> None:
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop(grace_s=1.0)

    async def _follow(self) -> None:
        timeout = httpx.Timeout(self.stale_s, connect=self.connect_timeout_s)
        headers = {"Authorization": f"Bearer {self.token.get_secret_value()}"}
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("GET", self.url, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise StreamRefused(f"the key service answered {response.status_code}")
            async for line in response.aiter_lines():
                if line:
                    try:
                        self.take(line.encode())
                    except (KeyError, ValidationError) as exc:
                        raise StreamRefused(f"a line of the stream is not a state: {exc}") from exc
                    self.worker.succeeded()
        raise StreamEnded("the key service ended the stream")
