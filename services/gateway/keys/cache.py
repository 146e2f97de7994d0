"""Where key states live: the in-process cache (hot path) and Redis (shared by replicas).

Both are versioned by the key's ``version``: a state older than one already held is ignored,
so neither a late event nor a slow verify answer can bring back a revoked key. The in-process
cache also remembers the highest version of every key it has seen (a few bytes a key), so
this holds even for keys whose full state was evicted.

How long a local entry is trusted depends on what would have told this replica of a change:
while the Redis subscription (``subscriber.py``) has been up since the entry was last
confirmed, any change would have arrived within milliseconds, so the entry is trusted for
``ttl_s``; otherwise only for ``unsubscribed_ttl_s``, after which Redis or the key service is
asked again. When neither answers, an entry is served for ``stale_max_s`` after it was last
confirmed by any source, and then no more.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from shared.events import KeyState
from shared.key_store import KeyStore


@dataclass(slots=True)
class _Entry:
    state: KeyState
    confirmed_at: float  # monotonic: when a source last said this is the newest state


class RateBound:
    """A token bucket: at most ``rate_per_s`` a second on average, ``burst`` at once."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        """True (and one token spent) when a call may go now."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class LocalCache:
    """Key states by hash, LRU-bounded, with a short negative cache for unknown hashes (LRU
    too: invented keys push out only the least recently seen of their kind, never all)."""

    def __init__(
        self,
        size: int,
        ttl_s: float,
        negative_ttl_s: float,
        *,
        unsubscribed_ttl_s: float | None = None,
        stale_max_s: float = 300.0,
        negative_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.size = size
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.unsubscribed_ttl_s = ttl_s if unsubscribed_ttl_s is None else unsubscribed_ttl_s
        self.stale_max_s = stale_max_s
        self.negative_size = size if negative_size is None else negative_size
        # Since when (monotonic) changes have been pushed to this cache without a gap; None
        # while nothing pushes them (the subscription is down).
        self.covered_since: float | None = None
        self._states: OrderedDict[str, _Entry] = OrderedDict()  # key id -> entry
        self._by_hash: dict[str, str] = {}  # key hash (current or previous) -> key id
        self._versions: dict[str, int] = {}  # key id -> highest version ever seen
        self._negative: OrderedDict[str, float] = OrderedDict()  # key hash -> monotonic expiry

    def covered(self, since: float | None) -> None:
        """Changes are pushed from since on without a gap (None: they are not, any more)."""
        self.covered_since = since

    def _trusted_for(self, entry: _Entry) -> float:
        since = self.covered_since
        if since is not None and entry.confirmed_at >= since:
            return self.ttl_s
        return min(self.ttl_s, self.unsubscribed_ttl_s)

    def get(self, key_hash: str, *, allow_stale: bool = False) -> KeyState | None:
        """The state holding key_hash; None when absent or no longer trusted.

        With allow_stale (no source can answer), an entry is served up to stale_max_s after
        it was last confirmed.
        """
        key_id = self._by_hash.get(key_hash)
        if key_id is None:
            return None
        entry = self._states.get(key_id)
        if entry is None:
            return None
        age = self.clock() - entry.confirmed_at
        if age > (self.stale_max_s if allow_stale else self._trusted_for(entry)):
            return None
        self._states.move_to_end(key_id)
        return entry.state

    def put(self, state: KeyState, confirmed_at: float | None = None) -> KeyState | None:
        """Store state unless a newer version is known; return the newest state held.

        confirmed_at (monotonic, default now) is when the source read it: a lookup passes the
        time it was sent, so a change published while it was under way is not outlived.
        None when state is older than a version seen before whose state was since evicted:
        the caller must then ask a more authoritative source rather than trust state.
        """
        at = self.clock() if confirmed_at is None else confirmed_at
        known = self._versions.get(state.key_id, 0)
        current = self._states.get(state.key_id)
        if state.version < known:
            return current.state if current is not None else None
        if current is not None and state.version == current.state.version:
            current.confirmed_at = max(current.confirmed_at, at)  # the same state, confirmed
            self._states.move_to_end(state.key_id)
            return current.state
        self._versions[state.key_id] = state.version
        if current is not None:
            for old in (current.state.key_hash, current.state.previous_key_hash):
                if old is not None and old not in (state.key_hash, state.previous_key_hash):
                    self._by_hash.pop(old, None)
        self._states[state.key_id] = _Entry(state, at)
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
        if self.clock() >= expiry:
            del self._negative[key_hash]
            return False
        self._negative.move_to_end(key_hash)
        return True

    def add_negative(self, key_hash: str) -> None:
        if self.negative_ttl_s <= 0:
            return
        self._negative[key_hash] = self.clock() + self.negative_ttl_s
        self._negative.move_to_end(key_hash)
        while len(self._negative) > self.negative_size:  # bounded: the oldest seen go first
            self._negative.popitem(last=False)

    @property
    def negative_count(self) -> int:
        return len(self._negative)

    def __len__(self) -> int:
        return len(self._states)


# The store moved to shared/ (the key service writes it too); the old name stays importable.
RedisStore = KeyStore


__all__ = ["KeyStore", "LocalCache", "RateBound", "RedisError", "RedisStore"]
