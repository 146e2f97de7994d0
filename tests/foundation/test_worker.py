"""The one worker lifecycle (shared/worker.py): restarts with back-off and one log line per
failure, never a restart after a cancel, a bounded stop even when the function swallows the
cancel, and the health /readyz shows."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from shared.worker import Backoff, Worker, Workers, check_cancelled
from tests.polling import eventually

pytestmark = pytest.mark.unit  # no server: `make test-unit`

_FAST = Backoff(0.05, 0.4)


T = TypeVar("T")


async def _value(value: T) -> T:
    return value


def _running(workers: Workers) -> bool:
    return workers.running


def test_backoff_doubles_within_its_bound() -> None:
    b = Backoff(0.1, 1.0)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (60, 1.0)):
        for _ in range(20):
            assert ceiling / 2 <= b.delay(attempt) <= ceiling


async def test_a_failing_function_is_restarted_with_growing_pauses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []

    async def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 4:
            raise RuntimeError(f"broken {len(calls)}")
        await asyncio.Event().wait()  # healthy from the fifth call on

    worker = Worker("flaky", flaky, backoff=Backoff(0.1, 0.4))
    with caplog.at_level(logging.WARNING, logger="shared.worker"):
        worker.start()
        try:
            await eventually(lambda: _value(len(calls)), until=lambda n: n == 5, timeout=5)
            assert worker.running
        finally:
            assert await worker.stop()
    pauses = [b - a for a, b in itertools.pairwise(calls)]
    for pause, ceiling in zip(pauses, (0.1, 0.2, 0.4, 0.4), strict=True):
        assert ceiling / 2 - 0.01 <= pause <= ceiling + 0.2, pauses
    records = [r for r in caplog.records if r.name == "shared.worker"]
    assert len(records) == 4, "one line per failure"
    assert all(r.levelno == logging.ERROR for r in records)
    assert [bool(r.exc_info) for r in records] == [True, False, False, False], (
        "the traceback the first time at a place, one line after that"
    )
    assert records[0].getMessage().startswith("flaky failed: RuntimeError at test_worker.py:")
    health = worker.health()
    assert health["restarts"] == 4
    assert health["last_error"] == "RuntimeError: broken 4"
    assert health["running"] is False  # stopped
    at = datetime.fromisoformat(health["last_error_at"])
    assert abs((datetime.now(UTC) - at).total_seconds()) < 5


async def test_expected_errors_are_a_warning_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def away() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("broker away")

    worker = Worker("away", away, expected=(OSError,), backoff=Backoff(0.01, 0.02))
    with caplog.at_level(logging.DEBUG, logger="shared.worker"):
        worker.start()
        try:
            await eventually(lambda: _value(calls), until=lambda n: n >= 5, timeout=5)
        finally:
            await worker.stop()
    records = [r for r in caplog.records if r.name == "shared.worker"]
    assert all(not r.exc_info for r in records), "an expected error needs no traceback"
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in records]
    assert "away interrupted (ConnectionRefusedError: broker away)" in warnings[0].getMessage()
    assert worker.restarts >= 4


async def test_succeeded_resets_the_back_off() -> None:
    calls: list[float] = []
    worker: Worker

    async def reconnecting() -> None:
        calls.append(time.monotonic())
        if len(calls) >= 4:
            worker.succeeded()  # connected: the next failure pauses from the first step
        if len(calls) <= 5:
            raise OSError("lost")
        await asyncio.Event().wait()

    worker = Worker("reconnecting", reconnecting, expected=(OSError,), backoff=Backoff(0.1, 10.0))
    worker.start()
    try:
        await eventually(lambda: _value(len(calls)), until=lambda n: n == 6, timeout=5)
    finally:
        await worker.stop()
    assert calls[4] - calls[3] <= 0.2, "after succeeded(): the first step again"
    assert calls[3] - calls[2] >= 0.2, "before it: doubled twice"


async def test_a_return_without_a_stop_is_restarted() -> None:
    calls = 0

    async def returns() -> None:
        nonlocal calls
        calls += 1

    worker = Worker("returns", returns, backoff=_FAST)
    worker.start()
    try:
        await eventually(lambda: _value(calls), until=lambda n: n >= 2, timeout=5)
    finally:
        await worker.stop()
    assert worker.last_error == "RuntimeError: returned without being asked to stop"


async def test_a_cancel_is_never_restarted() -> None:
    calls = 0

    async def forever() -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    worker = Worker("forever", forever, backoff=_FAST)
    worker.start()
    await eventually(lambda: _value(calls), until=lambda n: n == 1)
    assert await worker.stop()
    await asyncio.sleep(0.2)  # a restart would have happened by now (the pause is <= 0.05)
    assert calls == 1
    assert worker.health() == {
        "running": False,
        "restarts": 0,
        "last_error": None,
        "last_error_at": None,
    }


async def test_an_error_raised_by_a_swallowed_cancel_is_the_cancel() -> None:
    """A library that swallows the cancel and then fails (a closed socket): the stop wins."""
    calls = 0

    async def swallows_then_fails() -> None:
        nonlocal calls
        calls += 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        raise OSError("connection closed under us")

    worker = Worker("swallower", swallows_then_fails, backoff=_FAST, cancel_wait_s=0.5)
    worker.start()
    await eventually(lambda: _value(calls), until=lambda n: n == 1)
    worker._task.cancel()  # type: ignore[union-attr]  # as a shutdown would, without stop()
    await asyncio.sleep(0.2)
    assert calls == 1, "restarted after a cancel"
    assert not worker.running
    assert worker.restarts == 0


async def test_stop_recancels_a_function_that_swallowed_the_first_cancel() -> None:
    """Python 3.11's wait_for can lose a cancel: the stop cancels again, and it ends."""
    swallowed = 0

    async def loses_one_cancel() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as 3.11's wait_for does when its inner call just finished

    worker = Worker("loses-one", loses_one_cancel, backoff=_FAST, cancel_wait_s=0.3)
    worker.start()
    await asyncio.sleep(0.05)
    began = time.monotonic()
    assert await worker.stop()
    assert swallowed == 1
    assert 0.25 <= time.monotonic() - began < 1.0, "one wait, then the second cancel"
    assert not worker.running


async def test_stop_is_bounded_when_the_function_swallows_every_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stubborn = True

    async def swallows_all() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if not stubborn:
                    raise

    worker = Worker("stubborn", swallows_all, backoff=_FAST, cancel_wait_s=0.2, cancel_tries=3)
    worker.start()
    await asyncio.sleep(0.05)
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="shared.worker"):
        assert await worker.stop() is False
    assert 0.55 <= time.monotonic() - began < 1.5, "three cancels 0.2 s apart, then given up"
    assert any("stubborn did not stop" in r.getMessage() for r in caplog.records)
    stubborn = False  # let the test's loop end clean
    assert await worker.stop()


async def test_a_cooperative_function_ends_within_the_grace_without_a_cancel() -> None:
    cancelled = False
    worker: Worker

    async def polite() -> None:
        nonlocal cancelled
        try:
            while not await worker.pause(5):
                pass
            await asyncio.sleep(0.1)  # finishing its batch: not cut half-way
        except asyncio.CancelledError:
            cancelled = True
            raise

    worker = Worker("polite", polite, backoff=_FAST)
    worker.start()
    await asyncio.sleep(0.05)
    began = time.monotonic()
    assert await worker.stop(grace_s=2.0)
    assert time.monotonic() - began < 1.0, "pause() woke at the stop"
    assert not cancelled
    assert worker.restarts == 0
    worker.start()  # and it starts again after a stop
    assert worker.running
    assert not worker.stopping.is_set()
    assert await worker.stop(grace_s=2.0)


async def test_check_cancelled_raises_only_while_cancelling() -> None:
    check_cancelled()  # not being cancelled: nothing
    reached = asyncio.Event()

    async def swallowing_loop() -> None:
        while True:
            try:
                reached.set()
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # swallowed, as a timed read can
            check_cancelled()

    task = asyncio.create_task(swallowing_loop())
    await reached.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done
    assert task.cancelled()


async def test_workers_start_stop_and_report_together() -> None:
    started: list[str] = []

    def forever(name: str) -> Worker:
        async def run() -> None:
            started.append(name)
            await asyncio.Event().wait()

        return Worker(name, run, backoff=_FAST)

    workers = Workers(forever("a"), forever("b"))
    assert not _running(workers)
    workers.start()
    await eventually(lambda: _value(sorted(started)), until=lambda s: s == ["a", "b"])
    assert workers.running
    assert set(workers.health()) == {"a", "b"}
    assert workers.health()["a"]["running"] is True
    assert await workers.stop()
    assert not _running(workers)
    assert all(not h["running"] for h in workers.health().values())
