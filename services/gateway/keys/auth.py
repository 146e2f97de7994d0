"""Authentication: checksum, then the in-process cache, then Redis, then the key service.

Each step answers only what it can: a local entry is trusted while the cache says so (for its
full TTL only while the Redis subscription pushes every change to it, see ``cache.py``);
Redis is asked next; a miss there goes to the key service's verify endpoint (a key used the
instant it was created may not be in Redis yet), and its "unknown" is remembered briefly.
When neither Redis nor the key service can answer, a key confirmed by some source within
``stale_key_max_s`` is still served from the process cache; any other is refused with 503:
it never reaches an upstream.

What Redis and the key service answer is used only when its MAC verifies (``trust.py``): a
state written into Redis by anyone else counts as absent. Calls to the key service for keys
nobody knows are bounded (``verify_rate_per_s``, ``verify_burst``): well-formed keys are easy
to invent (the checksum is public), and past the bound an unknown key is refused as invalid
without a database lookup, so invented keys cost a Redis miss each and no more.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr, ValidationError

from services.gateway.breaker import Breaker
from services.gateway.errors import AuthUnavailable, InvalidApiKey, MissingApiKey
from services.gateway.keys.cache import LocalCache, RateBound
from services.gateway.keys.trust import StateTrust
from services.gateway.telemetry.metrics import Metrics
from shared.apikeys import KEY_LENGTH, hash_key, hint, is_well_formed
from shared.events import KeyState
from shared.http import bearer_token
from shared.key_store import KeyStore
from shared.redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)


class VerifyFailed(Exception):
    """The key service did not give a usable answer."""


class Verifier:
    """The key service's internal verify endpoint, over one shared HTTP client."""

    def __init__(self, client: httpx.AsyncClient, keys_url: str, token: SecretStr) -> None:
        self.client = client
        self.url = keys_url.rstrip("/") + "/internal/v1/keys/verify"
        self.headers = {"authorization": f"Bearer {token.get_secret_value()}"}

    async def verify(self, key_hash: str) -> KeyState | None:
        """The state holding key_hash; None when the key service does not know it."""
        try:
            answer = await self.client.post(
                self.url, json={"key_hash": key_hash}, headers=self.headers
            )
        except httpx.HTTPError as exc:
            raise VerifyFailed(f"key service unreachable: {type(exc).__name__}") from exc
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise VerifyFailed(f"key service answered {answer.status_code}")
        try:
            body = answer.json()
            # A field the key service adds later must not turn every cache miss into a 503.
            known = {k: v for k, v in body.items() if k in KeyState.model_fields}
            return KeyState.model_validate(known)
        except (ValueError, AttributeError, ValidationError) as exc:
            raise VerifyFailed("key service answered an invalid key state") from exc


def _holds(state: KeyState, key_hash: str) -> bool:
    return key_hash in (state.key_hash, state.previous_key_hash)


def is_valid(state: KeyState, key_hash: str, now: datetime) -> bool:
    """True when state is active, unexpired, and key_hash is its secret (or, in grace, the old)."""
    if state.status != "active":
        return False
    if state.expires_at is not None and state.expires_at <= now:
        return False
    if hmac.compare_digest(state.key_hash, key_hash):
        return True
    return (
        state.previous_key_hash is not None
        and state.previous_valid_until is not None
        and state.previous_valid_until > now
        and hmac.compare_digest(state.previous_key_hash, key_hash)
    )


class Authenticator:
    """Turns an Authorization header into the key's state, or an OpenAI-shaped 401/503."""

    def __init__(
        self,
        *,
        local: LocalCache,
        store: KeyStore,
        verifier: Verifier,
        metrics: Metrics,
        redis_breaker: Breaker,
        verify_breaker: Breaker,
        redis_timeout_s: float,
        trust: StateTrust,
        verify_bound: RateBound,
    ) -> None:
        self.local = local
        self.trust = trust
        self.verify_bound = verify_bound
        self.store = store
        self.verifier = verifier
        self.metrics = metrics
        self.redis_breaker = redis_breaker
        self.verify_breaker = verify_breaker
        self.redis_timeout_s = redis_timeout_s
        self._writes: set[asyncio.Task[None]] = set()
        self._pending: dict[str, asyncio.Future[tuple[KeyState | None, str]]] = {}

    async def authenticate(self, authorization: str | None) -> KeyState:
        """The valid key behind the header; raises MissingApiKey, InvalidApiKey, AuthUnavailable."""
        secret = bearer_token(authorization)
        if secret is None:
            raise MissingApiKey()
        # A key held in process needs no checksum (only issued keys' hashes are held there):
        # the length is checked first, so no hash is taken of a long header.
        key_hash = hash_key(secret) if len(secret) == KEY_LENGTH else ""
        state = self.local.get(key_hash) if key_hash else None
        source = "local"
        if state is None:
            if not is_well_formed(secret):
                self._count("checksum", "invalid")
                raise InvalidApiKey(hint(secret))
            state, source = await self._lookup(key_hash)
        if state is None or not is_valid(state, key_hash, datetime.now(UTC)):
            self._count(source, "invalid")
            raise InvalidApiKey(hint(secret))
        self._count(source, "valid")
        return state

    def _count(self, source: str, result: str) -> None:
        self.metrics.auth.inc(source, result)

    async def _lookup(self, key_hash: str) -> tuple[KeyState | None, str]:
        state = self.local.get(key_hash)
        if state is not None:
            return state, "local"
        if self.local.is_negative(key_hash):
            return None, "negative"
        # One lookup per key at a time: a client firing 1,000 requests with a key this
        # replica has not seen yet causes one Redis or verify call, not 1,000.
        pending = self._pending.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._shared_lookup(key_hash))
            self._pending[key_hash] = pending
            pending.add_done_callback(lambda done: self._settled(key_hash, done))
        return await asyncio.shield(pending)

    async def _shared_lookup(self, key_hash: str) -> tuple[KeyState | None, str]:
        redis_answered = False
        if self.redis_breaker.available():
            redis_answered, newest = await self._from_redis(key_hash)
            if newest is not None:
                if not _holds(newest, key_hash):
                    self.local.add_negative(key_hash)  # a secret the key no longer has
                return newest, "redis"
        if self.verify_breaker.available():
            if not self.verify_bound.take():
                # Past the bound only invented keys come here (issued ones are in Redis): no
                # database lookup, and not remembered, so a real key is asked for later.
                return None, "verify_bound"
            asked = time.monotonic()
            try:
                found = await self.verifier.verify(key_hash)
            except VerifyFailed as exc:
                log.warning("verify failed: %s", exc)
                self.verify_breaker.failed()
            else:
                self.verify_breaker.succeeded()
                if found is not None and not self.trust.admit(found, "verify"):
                    found = None
                if found is None:
                    self.local.add_negative(key_hash)
                    return None, "verify"
                newest = self.local.put(found, asked)
                if redis_answered:
                    self._write_back(found)
                return newest or found, "verify"
        # Neither shared source answered: an entry confirmed not too long ago is still the
        # best knowledge we have; an older one, or none, is refused with 503.
        stale = self.local.get(key_hash, allow_stale=True)
        if stale is not None:
            return stale, "stale"
        self._count("none", "unavailable")
        raise AuthUnavailable()

    async def _from_redis(self, key_hash: str) -> tuple[bool, KeyState | None]:
        """Whether Redis answered, and the newest state it led to (a trusted one only)."""
        asked = time.monotonic()
        try:
            found = await asyncio.wait_for(self.store.lookup(key_hash), self.redis_timeout_s)
        except ValidationError:
            # Redis answered, with something no key service wrote: absent, and Redis is not
            # at fault (no breaker), so it is asked again for other keys.
            self.trust.refused("redis", "not a key state")
            return True, None
        except REDIS_ERRORS as exc:
            log.warning("redis lookup failed: %s", type(exc).__name__)
            self.redis_breaker.failed()
            return False, None
        self.redis_breaker.succeeded()
        if found is None or not self.trust.admit(found, "redis"):
            return True, None
        return True, self.local.put(found, asked)

    def _settled(self, key_hash: str, done: asyncio.Future[tuple[KeyState | None, str]]) -> None:
        self._pending.pop(key_hash, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone already

    def _write_back(self, state: KeyState) -> None:
        """Share a verify answer with the other replicas, off the request path."""

        async def write() -> None:
            try:
                await self.store.apply([state])
            except REDIS_ERRORS as exc:
                log.warning("redis write-back failed: %s", type(exc).__name__)

        task = asyncio.create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
