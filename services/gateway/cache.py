"""Where key states live: the in-process cache (hot path) and Redis (shared by replicas).

Both are versioned by the key's ``version``: a state older than one already held is ignored,
so neither a late event nor a slow verify answer can bring back a revoked key. The in-process
cache also remembers the highest version of every key it has seen (a few bytes a key), so
this holds even for keys whose full state was evicted.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.events import KeyState


@dataclass(slots=True)
class _Entry:
    state: KeyState
    stored_at: float


class Breaker:
    """After a failure, skip a dependency for a while instead of waiting on it per request."""

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self._down_until = 0.0

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self) -> None:
        self._down_until = time.monotonic() + self.retry_s

    def succeeded(self) -> None:
        self._down_until = 0.0


class LocalCache:
    """Key states by hash, LRU-bounded, with a short negative cache for unknown hashes."""

    def __init__(self, size: int, ttl_s: float, negative_ttl_s: float) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._states: OrderedDict[str, _Entry] = OrderedDict()  # key id -> entry
        self._by_hash: dict[str, str] = {}  # key hash (current or previous) -> key id
        self._versions: dict[str, int] = {}  # key id -> highest version ever seen
        self._negative: dict[str, float] = {}  # key hash -> monotonic expiry

    def get(self, key_hash: str, *, allow_stale: bool = False) -> KeyState | None:
        """The state holding key_hash; None when absent or older than the TTL (unless stale ok)."""
        key_id = self._by_hash.get(key_hash)
        if key_id is None:
            return None
        entry = self._states.get(key_id)
        if entry is None:
            return None
        if not allow_stale and time.monotonic() - entry.stored_at > self.ttl_s:
            return None
        self._states.move_to_end(key_id)
        return entry.state

    def put(self, state: KeyState) -> KeyState | None:
        """Store state unless a newer version is known; return the newest state held.

        None when state is older than a version seen before whose state was since evicted:
        the caller must then ask a more authoritative source rather than trust state.
        """
        known = self._versions.get(state.key_id, 0)
        current = self._states.get(state.key_id)
        if state.version < known:
            return current.state if current is not None else None
        self._versions[state.key_id] = state.version
        if current is not None:
            for old in (current.state.key_hash, current.state.previous_key_hash):
                if old is not None and old not in (state.key_hash, state.previous_key_hash):
                    self._by_hash.pop(old, None)
        self._states[state.key_id] = _Entry(state, time.monotonic())
        self._states.move_to_end(state.key_id)
        for key_hash in (state.key_hash, state.previous_key_hash):
            if key_hash is not None:
                self._by_hash[key_hash] = state.key_id
                self._negative.pop(key_hash, None)
        while len(self._states) > self.size:
            _, evicted = self._states.popitem(last=False)
            for key_hash in (evicted.state.key_hash, evicted.state.previous_key_hash):
                if key_hash is not None and self._by_hash.get(key_hash) == evicted.state.key_id:
                    del self._by_hash[key_hash]
        return state

    def is_negative(self, key_hash: str) -> bool:
        expiry = self._negative.get(key_hash)
        if expiry is None:
            return False
        if time.monotonic() >= expiry:
            del self._negative[key_hash]
            return False
        return True

    def add_negative(self, key_hash: str) -> None:
        if self.negative_ttl_s <= 0:
            return
        if len(self._negative) >= self.size:  # invented keys must not grow memory unbounded
            self._negative.clear()
        self._negative[key_hash] = time.monotonic() + self.negative_ttl_s

    def __len__(self) -> int:
        return len(self._states)


# KEYS[1] = state key; KEYS[2..] = hash -> id keys. ARGV = version, state JSON, key id.
_APPLY = """
local held = redis.call('HGET', KEYS[1], 'v')
if held and tonumber(held) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[3]) end
return 1
"""
# KEYS[1] = hash -> id key. ARGV[1] = prefix of state keys.
_LOOKUP = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('HGET', ARGV[1] .. id, 's')
"""


class RedisStore:
    """Key states in Redis, shared by every replica, written only by newer versions."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._apply = client.register_script(_APPLY)
        self._lookup = client.register_script(_LOOKUP)
        self.offsets_key = f"{prefix}feeder:offsets"

    def _state_key(self, key_id: str) -> str:
        return f"{self.prefix}key:{key_id}"

    def _hash_key(self, key_hash: str) -> str:
        return f"{self.prefix}hash:{key_hash}"

    async def lookup(self, key_hash: str) -> KeyState | None:
        """The state whose current or previous hash is key_hash, or None."""
        raw = await self._lookup(keys=[self._hash_key(key_hash)], args=[f"{self.prefix}key:"])
        return KeyState.model_validate_json(raw) if raw else None

    async def apply(self, states: list[KeyState], offsets: dict[str, int] | None = None) -> None:
        """Write each state unless Redis holds a newer one; then the feeder's offsets."""
        async with self.client.pipeline(transaction=False) as pipe:
            for state in states:
                hashes = [self._hash_key(state.key_hash)]
                if state.previous_key_hash:
                    hashes.append(self._hash_key(state.previous_key_hash))
                await self._apply(
                    keys=[self._state_key(state.key_id), *hashes],
                    args=[state.version, state.model_dump_json(), state.key_id],
                    client=pipe,
                )
            if offsets:
                pipe.hset(self.offsets_key, mapping=cast("Mapping[str, int]", offsets))  # type: ignore[arg-type]
            await pipe.execute()

    async def offsets(self) -> dict[str, int] | None:
        """The feeder's saved positions; None when Redis holds none (it started empty)."""
        raw = await self.client.hgetall(self.offsets_key)
        if not raw:
            return None
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


__all__ = ["Breaker", "LocalCache", "RedisError", "RedisStore"]
