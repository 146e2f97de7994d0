"""Identifiers: UUIDv7 event ids (time-ordered) and short prefixed resource ids."""

from __future__ import annotations

import secrets
import string
import uuid

import uuid_utils

_ALPHABET = string.ascii_letters + string.digits


def uuid7() -> uuid.UUID:
    """A new UUIDv7 as a standard-library UUID."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def resource_id(prefix: str, length: int = 24) -> str:
    """An opaque id such as ``key_Xy3...`` or ``proj_...`` (OpenAI's style)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
