"""Identifiers: UUIDv7 event ids (time-ordered) and short prefixed resource ids."""

from __future__ import annotations

import secrets
import string
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


def resource_id(prefix: str, length: int = 24) -> str:
    """An opaque id such as ``key_Xy3...`` or ``proj_...`` (OpenAI's style): the base62 digits
    of one uniform random number below 62**length (one call to the system's random source
    instead of one per character: the gateway makes one per request)."""
    number = secrets.randbelow(len(_ALPHABET) ** length)
    digits = []
    for _ in range(length):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return f"{prefix}_" + "".join(digits)
