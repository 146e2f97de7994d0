"""One lifecycle for every background worker: started, restarted after a failure, stopped bounded.

A ``Worker`` runs one async function as a task, for as long as the process wants it:

- A failure restarts the function after a back-off (``Backoff``: exponential with jitter, up
  to a bound, back to the first step once the function ran healthy for ``healthy_after_s`` or
  said so with ``succeeded()``). Each failure is one log line: an error the worker expects (it
  names them: Kafka or the database away) is a warning without traceback, and only the first
  of a streak; anything else is an error, with its traceback the first time it happens at a
  given place (``shared.errors.UnexpectedErrors``), so a bug that repeats does not flood the
  log. A function that returns while nobody asked it to stop counts as a failure too.
- A cancellation is never a failure and is never restarted. On Python 3.11 ``asyncio.wait_for``
  (and redis-py's timed reads) can swallow a cancel that lands as the awaited call completes;
  an exception raised while the task is being cancelled is taken as that cancel, and a loop
  that may swallow one calls ``check_cancelled()`` on each turn.
- ``stop()`` sets ``stopping`` first (a function that must not be cut half-way, a Kafka client
  starting say, watches it and returns), waits ``grace_s`` for that, then cancels, and cancels
  again up to ``cancel_tries`` times ``cancel_wait_s`` apart (the swallowed cancel). A worker
  still running after that is logged and left behind: a shutdown must go on.
- ``health()`` is its state for ``/readyz``: running, restarts, last error and when.

``Workers`` starts and stops several together (the stop in parallel, so bounded as one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.errors import UnexpectedErrors
from shared.events import utc_now

log = logging.getLogger(__name__)

_ERROR_TEXT_MAX = 300


def check_cancelled() -> None:
    """Raise CancelledError if this task is being cancelled (a cancel a library swallowed)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True)
class Backoff:
    """The pause before restart number ``attempt``: ``first_s`` doubled per attempt, at most
    ``max_s``, jittered down by up to half (replicas failing together do not retry together)."""

    first_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.first_s * 2 ** min(max(attempt, 1) - 1, 32))
        return random.uniform(ceiling / 2, ceiling)


class Worker:
    """One supervised background task (see the module docstring)."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        expected: tuple[type[BaseException], ...] = (),
        backoff: Backoff | None = None,
        healthy_after_s: float = 10.0,
        on_error: Callable[[Exception], None] | None = None,
        cancel_wait_s: float = 2.0,
        cancel_tries: int = 3,
    ) -> None:
        self.name = name
        self.run = run
        self.expected = expected
        self.backoff = backoff or Backoff()
        self.healthy_after_s = healthy_after_s
        self.on_error = on_error  # called with each failure, before the pause; must not raise
        self.cancel_wait_s = cancel_wait_s
        self.cancel_tries = cancel_tries
        self.stopping = asyncio.Event()
        self.restarts = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._attempt = 0
        self._streak: str | None = None  # the expected error already logged in this streak
        self._errors = UnexpectedErrors()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Run in the background (again, after a stop); a worker already running is left be."""
        if self.running:
            return
        self.stopping.clear()
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    def succeeded(self) -> None:
        """The function is healthy again (connected, a batch done): the next failure's pause
        starts from the first step."""
        self._attempt = 0
        self._streak = None

    async def pause(self, seconds: float) -> bool:
        """Sleep, waking at once when asked to stop; True when stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        return self.stopping.is_set()

    async def stop(self, grace_s: float = 0.0) -> bool:
        """Ask, wait ``grace_s``, then cancel (bounded); False if it did not stop."""
        task = self._task
        if task is None:
            return True
        self.stopping.set()
        if grace_s > 0 and not task.done():
            await asyncio.wait({task}, timeout=grace_s)
        for _ in range(self.cancel_tries):
            if task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=self.cancel_wait_s)
        if not task.done():
            waited = grace_s + self.cancel_tries * self.cancel_wait_s
            log.error("worker %s did not stop within %.0f s; left behind", self.name, waited)
            return False
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("worker %s ended with %r", self.name, exc, exc_info=exc)
        return True

    def health(self) -> dict[str, Any]:
        """Running, restarts, last error and its time (ISO 8601), JSON-ready for /readyz."""
        return {
            "running": self.running,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_at": None if self.last_error_at is None else self.last_error_at.isoformat(),
        }

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            began = loop.time()
            try:
                await self.run()
                if self.stopping.is_set():
                    return
                check_cancelled()
                failure: Exception = RuntimeError("returned without being asked to stop")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                check_cancelled()  # an error raised by a cancel a library swallowed
                failure = exc
            if loop.time() - began >= self.healthy_after_s:
                self.succeeded()
            delay = self._failed(failure, stopping=self.stopping.is_set())
            if delay is None or await self.pause(delay):
                return

    def _failed(self, exc: Exception, *, stopping: bool) -> float | None:
        """Record and log one failure; the pause before the restart (None: no restart)."""
        text = f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX]
        self.last_error, self.last_error_at = text, utc_now()
        if self.on_error is not None:
            self.on_error(exc)
        if stopping:
            log.warning("worker %s failed while stopping (%s)", self.name, text)
            return None
        self._attempt += 1
        self.restarts += 1
        delay = self.backoff.delay(self._attempt)
        if isinstance(exc, self.expected):
            level = logging.WARNING if self._streak != text else logging.DEBUG
            self._streak = text
            log.log(level, "%s interrupted (%s); restarting in %.1f s", self.name, text, delay)
        else:
            self._streak = None
            where, first = self._errors.place(exc)
            log.error(
                "%s failed: %s at %s: %r; restarting in %.1f s",
                self.name,
                type(exc).__name__,
                where,
                str(exc)[:200],
                delay,
                exc_info=exc if first else None,
            )
        return delay


class Workers:
    """Several workers started and stopped together; their health by name."""

    def __init__(self, *workers: Worker) -> None:
        self.workers = list(workers)

    def __iter__(self) -> Iterator[Worker]:
        return iter(self.workers)

    @property
    def running(self) -> bool:
        return bool(self.workers) and all(w.running for w in self.workers)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    async def stop(self, grace_s: float = 0.0) -> bool:
        """Stop all at once (bounded by the slowest); False if any did not stop."""
        stopped = await asyncio.gather(*(w.stop(grace_s) for w in self.workers))
        return all(stopped)

    def health(self) -> dict[str, dict[str, Any]]:
        return {w.name: w.health() for w in self.workers}
