"""Tollgate's secret formats: ``sk-tg-`` (API keys) or ``sk-tg-admin-`` (admin keys) + 43
base62 characters of randomness + 6 of CRC32.

The marker ``tg-`` lets secret scanners tell our keys from other ``sk-`` keys, and ``admin-``
an admin key (management only) from an API key (inference only): the ``-`` is outside base62,
so neither format ever passes for the other. 43 base62 characters carry 256 bits; the CRC32 of
everything before it (base62, as GitHub's tokens do) lets a service refuse a mistyped or
invented key without any lookup. At rest only the SHA-256 of the whole secret and a hint
(``sk-...`` + the last 4 characters) are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
PREFIX = "sk-tg-"
RANDOM_CHARS = 43  # 43 * log2(62) = 256.03 bits
CHECKSUM_CHARS = 6  # 62**6 > 2**32
KEY_LENGTH = len(PREFIX) + RANDOM_CHARS + CHECKSUM_CHARS
ADMIN_PREFIX = "sk-tg-admin-"
ADMIN_KEY_LENGTH = len(ADMIN_PREFIX) + RANDOM_CHARS + CHECKSUM_CHARS
_BASE62_SET = frozenset(BASE62)


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(BASE62[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_CHARS)


def generate(prefix: str = PREFIX) -> str:
    """A new secret key. Show it once; keep only ``hash_key`` and ``hint`` of it."""
    body = prefix + "".join(secrets.choice(BASE62) for _ in range(RANDOM_CHARS))
    return body + _checksum(body)


def generate_admin() -> str:
    """A new admin key (``sk-tg-admin-...``): management only, never inference."""
    return generate(ADMIN_PREFIX)


def is_well_formed_admin(secret: str) -> bool:
    """True when secret is shaped as an admin key, its checksum matching."""
    return is_well_formed(secret, ADMIN_PREFIX)


def is_well_formed(secret: str, prefix: str = PREFIX) -> bool:
    """True when secret has the prefix, length, alphabet and a matching checksum."""
    if len(secret) != len(prefix) + RANDOM_CHARS + CHECKSUM_CHARS or not secret.startswith(prefix):
        return False
    tail = secret[len(prefix) :]
    if not _BASE62_SET.issuperset(tail):
        return False
    body, check = secret[:-CHECKSUM_CHARS], secret[-CHECKSUM_CHARS:]
    return hmac.compare_digest(_checksum(body), check)


def hash_key(secret: str) -> str:
    """SHA-256 hex of the whole secret: what is stored, published and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hint(secret: str) -> str:
    """What identifies a key after creation: ``sk-...`` and its last 4 characters."""
    return f"sk-...{secret[-4:]}"
