"""The catalogue read again while the gateway runs: on SIGHUP, or when its file changes.

``CatalogueWatch.run`` (a gateway worker) looks at the file every ``poll_s`` (its size, its
modification time, then its bytes) and reloads when they changed; ``request`` (SIGHUP's
handler) reloads at the next tick whatever the file says. A catalogue that does not load (YAML,
validation, a variable not set) changes nothing: the gateway keeps routing by the one it has
and says why, once per version of the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from yaml import YAMLError

from shared.catalogue import Catalogue, load_catalogue

log = logging.getLogger(__name__)


class CatalogueWatch:
    """Reloads ``path`` into ``apply`` when it changes, or when asked."""

    def __init__(self, path: Path, apply: Callable[[Catalogue], None], poll_s: float) -> None:
        self.path = path
        self.apply = apply
        self.poll_s = poll_s
        self.reloads = 0
        self.failures = 0
        self._seen = self._stat()
        self._digest = self._read_digest()
        self._asked = asyncio.Event()

    def request(self) -> None:
        """Reload at the next look (SIGHUP)."""
        self._asked.set()

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.poll_s if self.poll_s > 0 else None):
                    await self._asked.wait()
            except TimeoutError:
                pass
            forced = self._asked.is_set()
            self._asked.clear()
            self.look(forced=forced)

    def look(self, *, forced: bool = False) -> bool:
        """Reload when the file changed (or ``forced``); True when a new catalogue applies."""
        seen = self._stat()
        if not forced and seen == self._seen:
            return False
        self._seen = seen
        digest = self._read_digest()
        if not forced and digest == self._digest:
            return False
        self._digest = digest
        try:
            catalogue = load_catalogue(self.path)
        except (OSError, YAMLError, ValidationError, ValueError) as exc:
            self.failures += 1
            log.error(  # noqa: TRY400 - the reason in one line, no traceback
                "the catalogue %s was not reloaded (the gateway keeps the one it has): %s",
                self.path,
                _reason(exc),
            )
            return False
        self.apply(catalogue)
        self.reloads += 1
        log.info(
            "catalogue %s reloaded", self.path, extra={"models": [m.id for m in catalogue.models]}
        )
        return True

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _read_digest(self) -> bytes | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{exc.error_count()} error(s), first at {where}: {first['msg']}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
