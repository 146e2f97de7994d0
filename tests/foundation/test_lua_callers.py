"""The Lua scripts' caller (``shared.redis_client.LuaScript``) against a fake Redis that forgets
its scripts as a restarted or failed-over one does: a lost script is loaded once and the call
answered, a pipeline sends again only the calls Redis refused for want of it (none applied
twice), answers keep their order, and any other error is raised, never retried."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from redis.exceptions import NoScriptError, ResponseError

from shared.redis_client import Call, LuaScript

pytestmark = pytest.mark.unit
SOURCE = "return ARGV[1]"


class FakeRedis:
    """Scripts by SHA-1, run by ``behave`` (keys, args -> answer); ``forget`` empties the cache."""

    def __init__(self, behave: Callable[[Sequence[str], Sequence[Any]], Any]) -> None:
        self.behave = behave
        self.scripts: set[str] = set()
        self.applied: list[tuple[tuple[str, ...], tuple[Any, ...]]] = []
        self.loads = 0

    def forget(self) -> None:
        self.scripts.clear()

    async def script_load(self, source: str) -> str:
        self.loads += 1
        sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324
        self.scripts.add(sha)
        return sha

    def _run(self, sha: str, count: int, *rest: Any) -> Any:
        if sha not in self.scripts:
            return NoScriptError("No matching script. Please use EVAL.")
        keys, args = tuple(rest[:count]), tuple(rest[count:])
        answer = self.behave(keys, args)
        if not isinstance(answer, Exception):
            self.applied.append((keys, args))
        return answer

    async def evalsha(self, sha: str, count: int, *rest: Any) -> Any:
        answer = self._run(sha, count, *rest)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        assert transaction is False
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[tuple[Any, ...]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def execute_command(self, name: str, *args: Any) -> None:
        assert name == "EVALSHA"
        self.queued.append(args)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert raise_on_error is False
        return [self.redis._run(*args) for args in self.queued]


def echo(keys: Sequence[str], args: Sequence[Any]) -> Any:
    return f"{keys[0]}={args[0]}"


async def test_a_lost_script_is_loaded_once_and_the_call_answered() -> None:
    redis = FakeRedis(echo)
    script = LuaScript(SOURCE)
    assert await script(redis, ["k"], [1]) == "k=1"  # type: ignore[arg-type]
    assert redis.loads == 1
    assert await script(redis, ["k"], [2]) == "k=2"  # type: ignore[arg-type]
    assert redis.loads == 1, "called by its SHA-1 while Redis holds it"
    redis.forget()  # a restart, a failover to a replica that never saw it
    assert await script(redis, ["k"], [3]) == "k=3"  # type: ignore[arg-type]
    assert redis.loads == 2
    assert [args for _, args in redis.applied] == [(1,), (2,), (3,)]


async def test_a_pipeline_sends_again_only_what_was_refused_and_keeps_the_order() -> None:
    redis = FakeRedis(echo)
    script = LuaScript(SOURCE)
    await redis.script_load(SOURCE)
    calls: list[Call] = [([f"k{i}"], [i]) for i in range(5)]
    half_forgotten = {"k1", "k3"}

    def some_forgotten(keys: Sequence[str], args: Sequence[Any]) -> Any:
        # As a cluster pipeline across nodes where only some lost the script.
        if keys[0] in half_forgotten:
            half_forgotten.discard(keys[0])
            return NoScriptError("No matching script")
        return echo(keys, args)

    redis.behave = some_forgotten
    answers = await script.run_many(redis, calls)  # type: ignore[arg-type]
    assert answers == [f"k{i}={i}" for i in range(5)]
    assert sorted(keys[0] for keys, _ in redis.applied) == [f"k{i}" for i in range(5)]
    assert len(redis.applied) == 5, "nothing applied twice"
    assert redis.loads == 2  # the test's own, then one reload


async def test_other_errors_are_raised_not_retried() -> None:
    def broken(keys: Sequence[str], args: Sequence[Any]) -> Any:
        return ResponseError("ERR wrong number of arguments") if args[0] == 2 else echo(keys, args)

    redis = FakeRedis(broken)
    script = LuaScript(SOURCE)
    await redis.script_load(SOURCE)
    with pytest.raises(ResponseError):
        await script.run_many(redis, [(["a"], [1]), (["b"], [2])])  # type: ignore[arg-type]
    with pytest.raises(ResponseError):
        await script(redis, ["b"], [2])  # type: ignore[arg-type]
    assert redis.loads == 1


async def test_a_script_that_cannot_be_loaded_is_said_so() -> None:
    class Forgetful(FakeRedis):
        async def script_load(self, source: str) -> str:
            self.loads += 1
            return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (never kept)

    redis = Forgetful(echo)
    with pytest.raises(NoScriptError, match="could not be loaded"):
        await LuaScript(SOURCE).run_many(redis, [(["a"], [1])])  # type: ignore[arg-type]
    assert redis.applied == []
