"""The local durable spool: usage events that Kafka could not take, kept on disk until it can.

Each spilled batch is one segment file, written to a temporary name, fsynced, then renamed,
so a crash leaves either a whole segment or none. Segments are replayed oldest first and
deleted only after Kafka acknowledged every event in them; consumers dedupe by event_id,
so an event sent twice across a crash is counted once.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

_SUFFIX = ".jsonl"


class Spool:
    """Segments of JSON lines under one folder; safe to call from worker threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for leftover in folder.glob("*.tmp"):  # a write cut short by a crash: never renamed
            leftover.unlink(missing_ok=True)
        self._depth = sum(len(self.read(s)) for s in self.segments())

    @property
    def depth(self) -> int:
        """Events waiting in the spool."""
        return self._depth

    def append(self, lines: list[bytes]) -> Path:
        """Write lines as one new segment, durably."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        temporary = self.folder / (name + ".tmp")
        final = self.folder / (name + _SUFFIX)
        with temporary.open("wb") as handle:
            handle.write(b"".join(line + b"\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.rename(final)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
        with self._lock:
            self._depth += len(lines)
        return final

    def segments(self) -> list[Path]:
        """Whole segments, oldest first."""
        return sorted(self.folder.glob("*" + _SUFFIX))

    @staticmethod
    def read(segment: Path) -> list[bytes]:
        return [line for line in segment.read_bytes().split(b"\n") if line.strip()]

    def remove(self, segment: Path, count: int) -> None:
        """Forget a segment Kafka has acknowledged in full."""
        segment.unlink(missing_ok=True)
        with self._lock:
            self._depth = max(0, self._depth - count)
