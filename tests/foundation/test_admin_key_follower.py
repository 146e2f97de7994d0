"""The admin key states' stream, both ends, without servers: what the key service sends (a
snapshot of the active keys, then newer states, pings only while current, a slow follower
cut off) and what a follower holds (rotations and revocations applied, older states
ignored, refusal once silent past its bound, a key created a moment ago found by waiting for
the next line)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from services.keys.admin_key_stream import PING, AdminKeyStates, state_line
from shared.admin_key_follower import AdminKeyFollower, AdminKeysUnavailable
from shared.events import AdminKeyState
from shared.http_server import draining

pytestmark = pytest.mark.unit


def state(key_id: str = "admkey_a", version: int = 1, **change: Any) -> AdminKeyState:
    values: dict[str, Any] = {
        "id": key_id,
        "name": "member",
        "hint": "sk-...abcd",
        "key_hash": f"{version:064x}" if "key_hash" not in change else change.pop("key_hash"),
        "status": "active",
        "organization": False,
        "project_ids": ("proj_a",),
        "permissions": ("usage:read",),
        "version": version,
    }
    return AdminKeyState(**(values | change))


def snapshot(*states: AdminKeyState) -> bytes:
    return orjson.dumps({"type": "snapshot", "states": [s.model_dump(mode="json") for s in states]})


def follower(**options: Any) -> AdminKeyFollower:
    from pydantic import SecretStr

    return AdminKeyFollower("http://127.0.0.1:1", SecretStr("x" * 32), **options)


async def test_a_snapshot_then_changes_are_held_by_hash() -> None:
    f = follower()
    first = state(key_hash="1" * 64)
    f.take(snapshot(first, state("admkey_gone", status="revoked", key_hash="2" * 64)))
    assert await f.active("1" * 64) == first
    assert "2" * 64 not in f.by_hash, "a revoked key in a snapshot is not held"

    rotated = state(version=2, key_hash="3" * 64)
    f.take(state_line(rotated))
    assert await f.active("3" * 64) == rotated
    assert "1" * 64 not in f.by_hash, "the secret a rotation replaced stops at once"

    f.take(state_line(state(version=1, key_hash="1" * 64)))  # late, older: ignored
    assert "1" * 64 not in f.by_hash

    f.take(state_line(state(version=3, key_hash="3" * 64, status="revoked")))
    assert f.by_hash == {}
    # Secrets seen end are refused at once, without the wait an unknown one gets.
    f.wait_s = 5.0
    started = time.monotonic()
    assert await f.active("3" * 64) is None
    assert await f.active("1" * 64) is None
    assert time.monotonic() - started < 0.1
    # A new snapshot replaces everything held.
    f.take(snapshot(state("admkey_b", key_hash="4" * 64)))
    assert set(f.by_hash) == {"4" * 64}


async def test_a_follower_silent_past_its_bound_refuses_with_503() -> None:
    f = follower(stale_s=0.05, wait_s=0.01)
    with pytest.raises(AdminKeysUnavailable):
        await f.active("1" * 64)  # never heard at all
    f.take(snapshot(state(key_hash="1" * 64)))
    assert (await f.active("1" * 64)) is not None
    await asyncio.sleep(0.06)
    with pytest.raises(AdminKeysUnavailable) as refused:
        await f.active("1" * 64)
    assert refused.value.status_code == 503
    assert refused.value.instance_code == "admin_keys_unavailable"
    f.take(PING)
    assert (await f.active("1" * 64)) is not None


async def test_an_unknown_key_waits_for_the_next_line_then_is_found_or_refused() -> None:
    f = follower(wait_s=0.5)
    f.take(snapshot())
    new = state(key_hash="5" * 64)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, f.take, state_line(new))
    started = time.monotonic()
    assert await f.active("5" * 64) == new
    assert time.monotonic() - started < 0.4
    # A ping and still unknown: None (the guard's 401), after that one line, not the bound.
    loop.call_later(0.05, f.take, PING)
    started = time.monotonic()
    assert await f.active("6" * 64) is None
    assert time.monotonic() - started < 0.4


def _states(**options: Any) -> AdminKeyStates:
    return AdminKeyStates(None, **options)  # type: ignore[arg-type]  # no database touched


async def _next(lines: Any) -> dict[str, Any]:
    return dict(orjson.loads(await asyncio.wait_for(lines.__anext__(), 2)))


async def test_the_stream_sends_a_snapshot_of_active_keys_then_newer_states() -> None:
    states = _states(heartbeat_s=0.02)
    states._apply([state(), state("admkey_old", status="revoked", key_hash="7" * 64)])
    states._synced_at = time.monotonic()
    first, queue = states.follow()
    lines = states.lines(first, queue)
    opened = await _next(lines)
    assert opened["type"] == "snapshot"
    assert [s["id"] for s in opened["states"]] == ["admkey_a"]
    states._apply([state(version=2), state(version=1)])  # one newer, one already held
    assert (await _next(lines))["state"]["version"] == 2
    assert (await _next(lines)) == {"type": "ping"}
    await lines.aclose()
    assert states.stats()["admin_key_state_followers"] == 0


async def test_no_ping_while_the_states_are_not_current() -> None:
    states = _states(heartbeat_s=0.02, fresh_s=0.05)
    states._synced_at = time.monotonic() - 1.0  # the last good sync is a second old
    first, queue = states.follow()
    lines = states.lines(first, queue)
    await _next(lines)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(lines.__anext__(), 0.2)


async def test_a_follower_that_reads_too_slowly_is_cut_off() -> None:
    states = _states(max_queued=3)
    first, queue = states.follow()
    for version in range(1, 6):
        states._apply([state(version=version)])
    assert states.cut_off == 1
    lines = states.lines(first, queue)
    await _next(lines)
    received = [await _next(lines) for _ in range(3)]
    assert [r["state"]["version"] for r in received] == [1, 2, 3]
    with pytest.raises(StopAsyncIteration):
        await lines.__anext__()  # cut off: it reconnects for a new snapshot


def test_draining_is_by_server_address() -> None:
    assert not draining(None)
    assert not draining(("127.0.0.1", 1))
