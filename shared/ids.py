"""Identifiers: UUIDv7 event ids (time-ordered) and short prefixed resource ids."""

from __future__ import annotations

import os
import string
import threading
import uuid

import uuid_utils

_ALPHABET = string.ascii_letters + string.digits

# What the ids on events may look like (unanchored; ``re.fullmatch`` them, or wrap in ^...$).
# Made by resource_id: a prefix, ``_`` and 24 base62 characters; tests and tools use shorter
# ones, so the bound is looser. Request ids are the caller's ``X-Request-Id`` when it matches,
# else ``req_`` + 20 base62 characters.
KEY_ID_CHARS = r"key_[A-Za-z0-9_]{1,64}"
PROJECT_ID_CHARS = r"proj_[A-Za-z0-9_]{1,64}"
REQUEST_ID_CHARS = r"[A-Za-z0-9._\-]{1,128}"


def uuid7() -> uuid.UUID:
    """A new UUIDv7 as a standard-library UUID."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def uuid7_text() -> str:
    """A new UUIDv7 in its canonical text, as events carry it (no UUID object made)."""
    return str(uuid_utils.uuid7())


class _RandomBytes:
    """The system's random bytes, drawn 4 KiB at a time: one ``getrandom`` call per id made
    the gateway release and take back the GIL on every request. Emptied in a forked child,
    which must not hand out its parent's ids."""

    SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._position = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._buffer, self._position = b"", 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._position + count > len(self._buffer):
                self._buffer, self._position = os.urandom(max(self.SIZE, count)), 0
            start = self._position
            self._position += count
            return self._buffer[start : self._position]


_RANDOM = _RandomBytes()
# Bytes 0-247 map to base62 digits (each digit four times: uniform), 248-255 are dropped.
_ACCEPTED = 4 * len(_ALPHABET)
_TO_BASE62 = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) if b < _ACCEPTED else 0 for b in range(256))
_REJECTED = bytes(range(_ACCEPTED, 256))


def resource_id(prefix: str, length: int = 24) -> str:
    """An opaque id such as ``key_Xy3...`` or ``proj_...`` (OpenAI's style): ``length``
    uniform base62 digits from the system's random source, one byte each (bytes above the
    last whole multiple of 62 are dropped, so no digit is likelier than another)."""
    digits = b""
    while len(digits) < length:
        digits += _RANDOM.take(length - len(digits) + 2).translate(_TO_BASE62, _REJECTED)
    return f"{prefix}_{digits[:length].decode()}"
