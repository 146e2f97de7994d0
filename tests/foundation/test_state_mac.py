"""The key states' MAC (shared/state_mac.py): a canonical form that survives every trip a state
makes (keys.events, Redis, the verify answer), a keyring that rotates, real secrets only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import Field, SecretStr, ValidationError

from services.gateway.settings import GatewaySettings
from services.keys.settings import KeysSettings
from shared.apikeys import generate, hash_key
from shared.events import KeyEvent, KeyState
from shared.policy import Budget, RateLimits
from shared.state_mac import Keyring, KeyringError, canonical

pytestmark = pytest.mark.unit  # no server: `make test-unit`

OLD = "old1:the-old-state-mac-secret-0123456789"
NEW = "new2:the-new-state-mac-secret-0123456789"


def _ring(text: str) -> Keyring:
    return Keyring.parse(SecretStr(text), "KEYS")


def _state(**changes: object) -> KeyState:
    state = KeyState(
        key_id="key_mac",
        project_id="proj_mac",
        name="équipe ☃",
        hint="sk-...abcd",
        key_hash=hash_key(generate()),
        previous_key_hash=hash_key(generate()),
        previous_valid_until=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        expires_at=datetime(2031, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        created_at=datetime.now(UTC),
        version=7,
        rate_limits=RateLimits(requests_per_minute=600),
        budget=Budget(limit_usd=Decimal("25.10"), period="month"),
        project_budget=Budget(limit_usd=Decimal("0.000001"), period="total"),
        allowed_models=("Qwen/Qwen2.5-0.5B-Instruct",),
    )
    return state.model_copy(update=changes)


def test_a_signed_state_verifies_after_every_trip() -> None:
    ring = _ring(OLD)
    state = ring.sign(_state())
    event = KeyEvent(type="key.updated", occurred_at=datetime.now(UTC), **state.model_dump())
    trips = [
        KeyEvent.model_validate_json(event.to_bytes()).state(),  # keys.events
        KeyState.model_validate_json(state.model_dump_json()),  # Redis and its channel
        KeyState.model_validate(state.model_dump(mode="json")),  # the verify answer
        KeyState.model_validate_json(
            KeyState.model_validate_json(state.model_dump_json()).model_dump_json()
        ),
    ]
    for trip in trips:
        assert trip == state
        assert ring.verify(trip)
    assert ring.verify(KeyEvent.model_validate_json(event.to_bytes()))


@pytest.mark.parametrize(
    "change",
    [
        {"status": "revoked"},
        {"project_id": "proj_other"},
        {"version": 8},
        {"budget": Budget(limit_usd=Decimal("25.11"), period="month")},
        {"previous_valid_until": datetime(2030, 1, 2, 3, 4, 5, 678902, tzinfo=UTC)},
        {"allowed_models": None},
    ],
)
def test_any_change_breaks_the_mac(change: dict[str, object]) -> None:
    ring = _ring(OLD)
    assert not ring.verify(ring.sign(_state()).model_copy(update=change))


def test_a_new_optional_field_keeps_the_macs_made_before_it() -> None:
    class Later(KeyState):
        note: str | None = Field(None)

    ring = _ring(OLD)
    state = ring.sign(_state())
    later = Later.model_validate(state.model_dump())
    assert canonical(later) == canonical(state)
    assert ring.verify(later)


def test_the_first_entry_signs_and_every_entry_verifies() -> None:
    old, new = _ring(OLD), _ring(NEW)
    rolling = _ring(f"{NEW},{OLD}")
    by_old = old.sign(_state())
    by_rolling = rolling.sign(_state())
    assert by_rolling.mac is not None
    assert by_rolling.mac.startswith("new2:")
    assert rolling.verify(by_old), "the second entry verifies"
    assert new.verify(by_rolling)
    assert not new.verify(by_old), "an entry removed from the keyring no longer verifies"
    assert not old.verify(_state()), "no MAC, no trust"
    forged = _ring("old1:someone-elses-secret-012345678")
    assert not old.verify(forged.sign(_state())), "the id alone proves nothing"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "changeme",
        "k1:changeme",
        "k1:short",
        "no-id-separator-0123456789",
        "bad id:a-real-secret-0123456789",
        "k1:a-real-secret-0123456789,k1:another-secret-012345678",
    ],
)
def test_placeholder_or_malformed_keyrings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="STATE_MAC_KEYS") as caught:
        Keyring.parse(SecretStr(text), "TOLLGATE_KEYS_STATE_MAC_KEYS")
    assert "0123456789" not in str(caught.value), "the secret is never in the message"
    internal = SecretStr("a-real-internal-token-0123456789")
    with pytest.raises(ValidationError, match="STATE_MAC_KEYS"):
        KeysSettings(
            admin_token=SecretStr("a-real-admin-token-0123456789"),
            internal_token=internal,
            state_mac_keys=SecretStr(text),
        )
    with pytest.raises(ValidationError, match="STATE_MAC_KEYS"):
        GatewaySettings(internal_token=internal, state_mac_keys=SecretStr(text))
    assert issubclass(KeyringError, ValueError)
