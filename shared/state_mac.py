"""Key states' MAC: only the key service makes states the gateways trust.

A key state (on ``keys.events``, in Redis, in the verify answer) carries ``mac``: an
HMAC-SHA256, keyed by a secret the key service and the gateways share, over the state's
canonical form. Anyone who can write to Kafka or Redis but does not hold the secret cannot
mint a key nor bring a revoked one back: the gateways refuse what does not verify.

The secret is a keyring, so it can be rotated: ``id:secret`` entries separated by commas;
the first one signs, every one verifies. ``mac`` is ``<id>:<hex digest>``.

The canonical form is the state's JSON (pydantic's JSON mode, so datetimes and decimals are
the text that travels) without ``mac`` and without the fields that are None, with sorted keys
and no spaces, after a fixed label. So re-serialising a state anywhere (Kafka, Redis, the
verify answer) keeps its MAC, and a new optional field (None by default) added later does not
change the MAC of states made before it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from shared.events import KeyState
from shared.settings import require_real_secret

_LABEL = b"tollgate-key-state-v1\n"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_STATE_FIELDS = set(KeyState.model_fields) - {"mac"}
_State = TypeVar("_State", bound=KeyState)  # a KeyState or a KeyEvent


class KeyringError(ValueError):
    """A keyring setting that cannot be used (its text is never in the message)."""


def canonical(state: KeyState) -> bytes:
    """The bytes a state's MAC covers (a KeyEvent's state fields only)."""
    fields = state.model_dump(mode="json", include=_STATE_FIELDS, exclude_none=True)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _LABEL + text.encode()


def new_keyring_text(key_id: str = "k1") -> str:
    """A fresh one-entry keyring, as ``make up`` writes it into the run folder."""
    return f"{key_id}:{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class Keyring:
    """Secrets by id: the first signs, all verify."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, value: SecretStr, name: str) -> Keyring:
        """``id:secret[,id:secret...]``; each secret real (no placeholder, 16+ characters)."""
        entries: list[tuple[str, bytes]] = []
        for part in value.get_secret_value().split(","):
            key_id, sep, secret = part.strip().partition(":")
            if not sep or not _ID.match(key_id):
                raise KeyringError(
                    f"{name} must be id:secret entries separated by commas"
                    " (id: 1 to 32 letters, digits, _ or -)"
                )
            require_real_secret(SecretStr(secret), f"{name} (entry {key_id!r})")
            if key_id in {k for k, _ in entries}:
                raise KeyringError(f"{name} names the id {key_id!r} twice")
            entries.append((key_id, secret.encode()))
        return cls(tuple(entries))

    @property
    def signer(self) -> str:
        """The id of the entry that signs."""
        return self.keys[0][0]

    def sign(self, state: _State) -> _State:
        """The state (or event) with its MAC, by the first entry."""
        key_id, secret = self.keys[0]
        digest = hmac.new(secret, canonical(state), hashlib.sha256).hexdigest()
        return state.model_copy(update={"mac": f"{key_id}:{digest}"})

    def verify(self, state: KeyState) -> bool:
        """True when the state carries a MAC made by one of the entries."""
        if state.mac is None:
            return False
        key_id, _, digest = state.mac.partition(":")
        for known, secret in self.keys:
            if known == key_id:
                expected = hmac.new(secret, canonical(state), hashlib.sha256).hexdigest()
                return hmac.compare_digest(expected, digest)
        return False


class KeyringSettings(BaseSettings):
    """The settings of a service that holds the key-state keyring: ``<prefix>STATE_MAC_KEYS``,
    checked when the settings are built (each service describes the field its own way)."""

    state_mac_keys: SecretStr = Field(SecretStr(""), description="the key-state keyring")

    @classmethod
    def _keyring_setting(cls) -> str:
        return f"{cls.model_config.get('env_prefix', '')}STATE_MAC_KEYS".upper()

    @field_validator("state_mac_keys")
    @classmethod
    def _state_mac_keys_are_real(cls, value: SecretStr) -> SecretStr:
        Keyring.parse(value, cls._keyring_setting())
        return value

    def keyring(self) -> Keyring:
        """The parsed keyring (checked when the settings were built)."""
        return Keyring.parse(self.state_mac_keys, self._keyring_setting())


__all__ = ["Keyring", "KeyringError", "KeyringSettings", "canonical", "new_keyring_text"]
