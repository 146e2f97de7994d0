"""Key states in Redis, as the gateways read them and both the feeder and the key service write.

Layout, under a prefix (``tollgate:gw:`` by default), every name carrying a hash tag so that
each script touches one cluster slot only (README.md: "Past one machine"):

- ``{prefix}key:{<key_id>}``: hash, ``v`` (version) and ``s`` (state JSON): the newest state;
- ``{prefix}key:{<key_id>}:hashes``: set of every secret hash the key has had (same slot);
- ``{prefix}hash:{<key_hash>}``: hash, ``v`` and ``s`` again: the newest state known to hold
  (or to have held) that secret, so a lookup by hash is one ``HGET``, one round trip;
- ``{prefix}feeder:offsets:v2``: the gateways' feeder positions on ``keys.events``.

A write is two round trips: the key script (compare-and-set on the version, remember the
hashes, PUBLISH the state on ``{prefix}key-states`` when it is newer) answers the newest state
and every hash the key ever had; then that newest state is compare-and-set onto each of those
hash keys. So a secret dropped by a rotation ends up holding a state that no longer names it
(refused), and an older state arriving late (from Kafka, or a slow writer) is turned into the
newest one before it reaches any hash key: arrival order never matters. Hashes that already
hold a newer state that does not name them are forgotten, so the set stays small.

The names differ from the layout before hash tags (``key:<id>``, ``hash:<hash>`` holding an id,
``feeder:offsets``): an upgraded gateway finds no saved positions and refills Redis from the
compacted topic; the old keys are left unread and may be deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

from pydantic import ValidationError

from shared.events import KeyState
from shared.redis_client import Call, LuaScript, RedisClient

# KEYS[1] = key state, KEYS[2] = its hashes set. ARGV = version, state JSON, channel,
# distrusted, hashes... Answers {newest state JSON, every hash the key has had}; publishes only
# a newer state. What is held is replaced whatever its version when its text is exactly
# ARGV[4] (a state the writer refused: not made by the key service), or its version no number.
_APPLY_KEY = """
for i = 5, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
local held = redis.call('HMGET', KEYS[1], 'v', 's')
local version = tonumber(held[1])
local newest = ARGV[2]
if version and version >= tonumber(ARGV[1]) and (held[2] or '') ~= ARGV[4] then
  newest = held[2] or ''
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return {newest, redis.call('SMEMBERS', KEYS[2])}
"""
# KEYS[1] = a hash key. ARGV = version, state JSON, distrusted. Nil when written, else the
# state JSON it holds as new (replaced, as above, when that is exactly ARGV[3]).
_APPLY_HASH = """
local held = redis.call('HMGET', KEYS[1], 'v', 's')
local version = tonumber(held[1])
if version and version >= tonumber(ARGV[1]) and (held[2] or '') ~= ARGV[3] then
  return held[2] or ''
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
return false
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _hashes(state: KeyState) -> list[str]:
    return [h for h in (state.key_hash, state.previous_key_hash) if h is not None]


class KeyStore:
    """Versioned key states in Redis: a state is only ever replaced by a newer version, or by
    any state of its writer's when what Redis holds is one that ``trusted`` refuses (a state
    written by someone else than the key service: shared/state_mac.py)."""

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        trusted: Callable[[KeyState], bool] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.trusted = trusted or (lambda _: True)
        self.channel = f"{prefix}key-states"
        self.offsets_key = f"{prefix}feeder:offsets:v2"
        self._apply_key = LuaScript(_APPLY_KEY)
        self._apply_hash = LuaScript(_APPLY_HASH)

    def state_key(self, key_id: str) -> str:
        return f"{self.prefix}key:{{{key_id}}}"

    def hashes_key(self, key_id: str) -> str:
        return f"{self.prefix}key:{{{key_id}}}:hashes"

    def hash_key(self, key_hash: str) -> str:
        return f"{self.prefix}hash:{{{key_hash}}}"

    async def lookup(self, key_hash: str) -> KeyState | None:
        """The newest state known for this secret hash (it may no longer hold it), or None;
        the caller checks its MAC (raises ValidationError when it is no key state)."""
        raw = await self.client.hget(self.hash_key(key_hash), "s")
        return KeyState.model_validate_json(raw) if raw else None

    async def state(self, key_id: str) -> KeyState | None:
        """The newest state of the key, or None."""
        raw = await self.client.hget(self.state_key(key_id), "s")
        return KeyState.model_validate_json(raw) if raw else None

    async def apply(
        self, states: Sequence[KeyState], offsets: Mapping[str, int] | None = None
    ) -> None:
        """Write each state unless Redis holds a newer one; then the feeder's offsets, if any.

        The offsets are written last, after every hash key: a failure half-way leaves them
        behind, so the feeder reads those events again and the writes complete.
        """
        if states:
            texts = [state.model_dump_json() for state in states]
            calls: list[Call] = [
                (
                    [self.state_key(state.key_id), self.hashes_key(state.key_id)],
                    [state.version, text, self.channel, "", *_hashes(state)],
                )
                for state, text in zip(states, texts, strict=True)
            ]
            answers = cast("list[list[object]]", await self._apply_key.run_many(self.client, calls))
            # What Redis holds as newer but its writer did not make is replaced by ours (a
            # compare-and-set on that exact text: a genuine state written meanwhile stays).
            redo = [i for i, (raw, _) in enumerate(answers) if self._parse(raw) is None]
            if redo:
                again: list[Call] = []
                for i in redo:
                    keys, args = calls[i]
                    distrusted = _text(cast("bytes", answers[i][0]))
                    again.append((keys, [*args[:3], distrusted, *args[4:]]))
                replaced = await self._apply_key.run_many(self.client, again)
                for i, answer in zip(redo, replaced, strict=True):
                    answers[i] = cast("list[object]", answer)
            await self._spread(states, answers)
        if offsets:
            await self.client.hset(self.offsets_key, mapping=dict(offsets))  # type: ignore[arg-type]

    async def _spread(self, states: Sequence[KeyState], answers: list[list[object]]) -> None:
        """Put each key's newest state on every hash it has had; forget hashes done with."""
        newest: dict[str, tuple[KeyState, set[str]]] = {}
        for state, (raw, hashes) in zip(states, answers, strict=True):
            held = self._parse(raw) or state  # a refused state is never spread
            known = {_text(h) for h in cast("list[bytes]", hashes)} | set(_hashes(state))
            newest[state.key_id] = (held, known)
        targets = [(held, h) for held, known in newest.values() for h in sorted(known)]
        calls: list[Call] = [
            ([self.hash_key(h)], [held.version, held.model_dump_json(), ""]) for held, h in targets
        ]
        answers_by_hash = await self._apply_hash.run_many(self.client, calls)
        again: list[Call] = [
            (call[0], [*call[1][:2], _text(cast("bytes", raw))])
            for call, raw in zip(calls, answers_by_hash, strict=True)
            if raw is not None and self._parse(raw) is None
        ]
        if again:
            await self._apply_hash.run_many(self.client, again)
        # Every target now holds this newest state or a newer one; a hash the newest state
        # does not name never becomes valid again (versions only move forward), so the key
        # no longer needs to remember it.
        done = [(held, h) for held, h in targets if h not in _hashes(held)]
        if done:
            async with self.client.pipeline(transaction=False) as pipe:
                for held, h in done:
                    pipe.srem(self.hashes_key(held.key_id), h)
                await pipe.execute()

    def _parse(self, raw: object) -> KeyState | None:
        """The state Redis answered, or None when it is no key state or not a trusted one."""
        try:
            held = KeyState.model_validate_json(_text(cast("bytes", raw)))
        except ValidationError:
            return None
        return held if self.trusted(held) else None

    async def offsets(self) -> dict[str, int] | None:
        """The feeder's saved positions; None when Redis holds none (it started empty)."""
        raw = await self.client.hgetall(self.offsets_key)
        if not raw:
            return None
        return {_text(k): int(v) for k, v in raw.items()}


def parse_published(data: bytes | str) -> KeyState:
    """A state as published on the key-states channel."""
    return KeyState.model_validate_json(data)


__all__ = ["KeyStore", "parse_published"]
