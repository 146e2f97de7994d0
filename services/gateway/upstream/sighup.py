"""SIGHUP reloads the catalogue of every gateway this process runs (one, but tests run many).

The handler is installed on the running loop while at least one gateway listens, and removed
with the last one; a process without signal handlers (not the main thread) reloads on file
changes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)


class Reloads:
    """The reload requests of the gateways running in this process."""

    def __init__(self) -> None:
        self._requests: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, request: Callable[[], None]) -> None:
        self._requests.append(request)
        if self._loop is None:
            loop = asyncio.get_running_loop()
            try:
                loop.add_signal_handler(signal.SIGHUP, self.fire)
            except (ValueError, RuntimeError, NotImplementedError):
                log.info("SIGHUP cannot be handled here; the catalogue reloads on file changes")
                return
            self._loop = loop

    def discard(self, request: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._requests.remove(request)
        if not self._requests and self._loop is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.remove_signal_handler(signal.SIGHUP)
            self._loop = None

    def fire(self) -> None:
        log.info("SIGHUP: reloading the catalogue")
        for request in list(self._requests):
            request()


reloads = Reloads()
