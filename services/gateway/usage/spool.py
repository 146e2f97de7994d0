"""The local durable spool: usage events that Kafka could not take, kept on disk until it can.

Each spilled batch is one segment file, written to a temporary name, fsynced, then renamed,
so a crash leaves either a whole segment or none. Segments are replayed oldest first and
deleted only after Kafka acknowledged every event in them (or the quarantine beside the spool
took those it refuses for good); consumers dedupe by event_id, so an event sent twice across
a crash is counted once.

The spool is bounded: ``max_bytes`` covers the segments and the quarantine together (the disk
the gateway uses for usage events). A segment that would pass the bound is refused with
``SpoolFull``; the emitter then keeps the events in memory and the gateway stops admitting
metered requests (see the emitter), so usage is never dropped to stay under the bound.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from services.gateway.usage.quarantine import (
    SUFFIX,
    Quarantine,
    count_in_name,
    new_name,
    write_durably,
)

log = logging.getLogger(__name__)


class SpoolFull(Exception):
    """A segment would take the spool past its bound."""


class Spool:
    """Segments of JSON lines under one folder; safe to call from worker threads."""

    def __init__(
        self, folder: Path, *, max_bytes: int = 4 * 1024**3, warn_ratio: float = 0.8
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.warn_bytes = int(max_bytes * warn_ratio)
        folder.mkdir(parents=True, exist_ok=True)
        self.quarantine = Quarantine(folder.with_name(folder.name + "-quarantine"))
        self._lock = threading.Lock()
        for leftover in folder.glob("*.tmp"):  # a write cut short by a crash: never renamed
            leftover.unlink(missing_ok=True)
        self._index: dict[Path, tuple[int, int]] = {}  # segment: (events, bytes)
        self._depth = self._bytes = 0
        self.segments()
        self._level = "ok"
        self.check_level()

    @property
    def depth(self) -> int:
        """Events waiting in the spool."""
        return self._depth

    @property
    def size_bytes(self) -> int:
        """Bytes the segments take."""
        return self._bytes

    @property
    def used_bytes(self) -> int:
        """What counts against the bound: segments and quarantine."""
        return self.size_bytes + self.quarantine.size_bytes

    @property
    def full(self) -> bool:
        return self.used_bytes >= self.max_bytes

    def append(self, lines: list[bytes], *, force: bool = False) -> Path:
        """Write lines as one new segment, durably; SpoolFull past the bound unless forced
        (at shutdown, passing the bound beats losing events)."""
        data = b"".join(line + b"\n" for line in lines)
        if not force and self.used_bytes + len(data) > self.max_bytes:
            self.check_level(len(data))
            raise SpoolFull(
                f"{len(lines)} events ({len(data)} bytes) do not fit: "
                f"{self.used_bytes} of {self.max_bytes} bytes used"
            )
        path = write_durably(self.folder, new_name(len(lines)), data)
        self._add(path, len(lines), len(data))
        self.check_level()
        return path

    def append_what_fits(self, lines: list[bytes]) -> int:
        """Write as many leading lines as the bound allows as one segment; how many."""
        room = self.max_bytes - self.used_bytes
        fit = 0
        for line in lines:
            room -= len(line) + 1
            if room < 0:
                break
            fit += 1
        if fit:
            self.append(lines[:fit])
        else:
            self.check_level(len(lines[0]) + 1 if lines else 0)
        return fit

    def segments(self) -> list[Path]:
        """Whole segments, oldest first; one put there by hand (a re-feed) is counted too."""
        found = sorted(self.folder.glob("*" + SUFFIX))
        for segment in found:
            if segment not in self._index:
                known = count_in_name(segment)
                try:
                    count = known if known is not None else len(self.read(segment))
                    self._add(segment, count, segment.stat().st_size)
                except FileNotFoundError:
                    continue
        return found

    @staticmethod
    def read(segment: Path) -> list[bytes]:
        return [line for line in segment.read_bytes().split(b"\n") if line.strip()]

    def remove(self, segment: Path) -> None:
        """Forget a segment whose every event was acknowledged or quarantined."""
        segment.unlink(missing_ok=True)
        self._forget(segment)
        self.check_level()

    def replace(self, segment: Path, lines: list[bytes]) -> Path:
        """Keep only lines of a segment (the rest went to Kafka or quarantine), in its place
        in the order. A crash between the two steps leaves both: replayed twice, deduped."""
        if not lines:
            self.remove(segment)
            return segment
        head = segment.name.split("-", 1)[0]
        stamp = int(head) if head.isdigit() else None  # a file named by hand: now
        data = b"".join(line + b"\n" for line in lines)
        path = write_durably(self.folder, new_name(len(lines), stamp), data)
        segment.unlink(missing_ok=True)
        self._forget(segment)
        self._add(path, len(lines), len(data))
        self.check_level()
        return path

    def _add(self, segment: Path, count: int, size: int) -> None:
        with self._lock:
            self._index[segment] = (count, size)
            self._depth += count
            self._bytes += size

    def _forget(self, segment: Path) -> None:
        with self._lock:
            count, size = self._index.pop(segment, (0, 0))
            self._depth -= count
            self._bytes -= size

    def check_level(self, incoming: int = 0) -> None:
        """Log once each time use crosses the warning level or the bound (and back)."""
        used = self.used_bytes + incoming
        level = "full" if used >= self.max_bytes else "warn" if used >= self.warn_bytes else "ok"
        if level == self._level:
            return
        self._level = level
        figures = {"spool_bytes": used, "spool_max_bytes": self.max_bytes}
        if level == "full":
            log.error(
                "usage spool full: events wait in memory, metered requests get 503", extra=figures
            )
        elif level == "warn":
            log.warning("usage spool near its bound", extra=figures)
        else:
            log.info("usage spool back under its warning level", extra=figures)
