"""Structured JSON logs that carry the request id, with any API key redacted on the way out."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Anything shaped like an sk- secret, ours or another provider's: logs never carry one.
_SECRET = re.compile(r"sk-[A-Za-z0-9_\-]{16,}")
_STANDARD_FIELDS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def redact(text: str) -> str:
    """Replace every secret-shaped token in text with a marker."""
    return _SECRET.sub("sk-[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id and extra fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _STANDARD_FIELDS and not key.startswith("_")
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


class PlainFormatter(logging.Formatter):
    """Human-readable lines for a terminal, redacted the same way."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = request_id_var.get()
        prefix = f"[{request_id}] " if request_id else ""
        return redact(prefix + super().format(record))


class RepeatLimiter(logging.Filter):
    """A Kafka client's line repeated while a broker is away goes out once per window.

    aiokafka logs every failed reconnect and metadata refresh at ERROR, many a second while a
    broker is down: one line per message template (and logger and level) per ``window_s``,
    and the next one says how many like it were held back. Other loggers pass untouched."""

    _MAX_KEYS = 1000  # templates are few; this bounds a library that logs formatted text

    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka", "kafka"),
        window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key: [let through at, held]

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            held = int(seen[1])
            record.msg = f"{record.msg} [{held} more like this in the last {self.window_s:g} s]"
        if seen is None and len(self._seen) >= self._MAX_KEYS:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = [now, 0]
        return True


def setup_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    """Route the root logger to stderr as JSON lines (or plain text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatLimiter())
    handler.setFormatter(
        JsonFormatter(service)
        if json_lines
        else PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
