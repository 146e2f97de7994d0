"""Usage events Kafka refused for good, or spool lines that are no event at all: kept, not sent.

A record that retrying cannot get onto the topic (larger than the topic accepts, refused as
invalid, a spool line cut short or not JSON) must neither block the records behind it nor be
dropped: it moves here, one JSON line per record with the reason and the time, written as
durably as a spool segment (temporary name, fsync, rename, fsync of the folder). An operator
reads the reason, fixes the cause, and may re-feed the records (``record`` is the original
line; ``record_base64`` when the line was not UTF-8).

The count of records is in each file's name (``<time_ns>-<id>-<count>.jsonl``), so the count
and the bytes are known from the folder listing alone, and a file the operator moved away is
no longer counted at the next ``rescan``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)
SUFFIX = ".jsonl"
_REASON_CHARS = 1000


@dataclass(frozen=True)
class Refused:
    """One record and why it cannot be sent, ever."""

    line: bytes
    reason: str


def write_durably(folder: Path, name: str, data: bytes) -> Path:
    """Write data as folder/name so that a crash leaves the whole file or none."""
    temporary = folder / (name + ".tmp")
    final = folder / name
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(final)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
    return final


def count_in_name(path: Path) -> int | None:
    """The record count a file's name carries, or None for a name without one."""
    tail = path.name.removesuffix(SUFFIX).rsplit("-", 2)
    return int(tail[-1]) if len(tail) == 3 and tail[-1].isdigit() else None


def new_name(count: int, stamp: int | None = None) -> str:
    """``<time_ns>-<id>-<count>.jsonl``: sorts by time, carries its count."""
    return f"{stamp or time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{count}{SUFFIX}"


def _entry(refused: Refused, source: str, at: str) -> bytes:
    entry: dict[str, object] = {
        "quarantined_at": at,
        "source": source,
        "reason": refused.reason[:_REASON_CHARS],
        "size": len(refused.line),
    }
    try:
        entry["record"] = refused.line.decode()
    except UnicodeDecodeError:
        entry["record_base64"] = base64.b64encode(refused.line).decode()
    return json.dumps(entry, ensure_ascii=False).encode() + b"\n"


class Quarantine:
    """Files of refused records in one folder; safe to call from worker threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for leftover in folder.glob("*.tmp"):  # a write cut short by a crash: never renamed
            leftover.unlink(missing_ok=True)
        self._count = 0
        self._bytes = 0
        self.rescan()

    @property
    def count(self) -> int:
        """Records in quarantine."""
        return self._count

    @property
    def size_bytes(self) -> int:
        """Bytes the quarantine files take."""
        return self._bytes

    def add(self, refused: Iterable[Refused], source: str) -> Path | None:
        """Keep refused records, durably, with their reason; None when there were none."""
        at = datetime.now(UTC).isoformat()
        lines = [_entry(r, source, at) for r in refused]
        if not lines:
            return None
        data = b"".join(lines)
        with self._lock:  # a rescan meanwhile would count the new file twice, or not at all
            path = write_durably(self.folder, new_name(len(lines)), data)
            self._count += len(lines)
            self._bytes += len(data)
        log.error(
            "quarantined %d usage record(s) Kafka refuses for good",
            len(lines),
            extra={"quarantine_file": str(path), "source": source},
        )
        return path

    def rescan(self) -> None:
        """Count again from the folder (an operator may have moved files away)."""
        with self._lock:
            count = size = 0
            for path in self.folder.glob("*" + SUFFIX):
                try:
                    size += path.stat().st_size
                except FileNotFoundError:
                    continue
                known = count_in_name(path)
                count += known if known is not None else _lines(path)
            self._count, self._bytes = count, size

    def entries(self) -> list[dict[str, object]]:
        """Every quarantined record, oldest file first (for operators and tests)."""
        return [
            json.loads(line)
            for path in sorted(self.folder.glob("*" + SUFFIX))
            for line in path.read_bytes().splitlines()
            if line.strip()
        ]


def _lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_bytes().splitlines() if line.strip())
    except FileNotFoundError:
        return 0
