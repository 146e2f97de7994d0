"""The key states' keyring of the tests that start a key service or a gateway in-process, and
signing as the key service does (shared/state_mac.py)."""

from __future__ import annotations

from pydantic import SecretStr

from shared.events import KeyState
from shared.state_mac import Keyring

STATE_MAC_KEYS = "test1:state-mac-secret-for-tests-0123456789"
KEYRING = Keyring.parse(SecretStr(STATE_MAC_KEYS), "STATE_MAC_KEYS")


def sign(state: KeyState) -> KeyState:
    """The state as the key service would make it: signed by the tests' keyring."""
    return KEYRING.sign(state)
