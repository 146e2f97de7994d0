"""Tokens: the operator token opens the management API only, the internal token verify only."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from services.keys.settings import KeysSettings
from shared import apikeys
from shared.events import KeyState
from tests.keys.harness import ADMIN_TOKEN, INTERNAL, INTERNAL_TOKEN, Running
from tests.state_macs import KEYRING

MANAGEMENT = [
    ("POST", "/v1/projects"),
    ("GET", "/v1/projects"),
    ("GET", "/v1/projects/{p}"),
    ("POST", "/v1/projects/{p}/keys"),
    ("GET", "/v1/projects/{p}/keys"),
    ("GET", "/v1/projects/{p}/keys/{k}"),
    ("PATCH", "/v1/projects/{p}/keys/{k}"),
    ("DELETE", "/v1/projects/{p}/keys/{k}"),
    ("POST", "/v1/projects/{p}/keys/{k}/default"),
    ("POST", "/v1/projects/{p}/keys/{k}/rotate"),
]


async def test_management_needs_the_operator_token(keys: Running) -> None:
    project = await keys.project()
    key = await keys.key(project)
    wrong = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        INTERNAL,
        {"Authorization": f"Bearer {key['key']}"},  # a client key opens nothing here
    ]
    for method, template in MANAGEMENT:
        path = template.format(p=project, k=key["id"])
        for headers in wrong:
            answer = await keys.client.request(
                method, path, json={"name": "x"}, headers={"Authorization": "", **headers}
            )
            assert answer.status_code == 401, (method, path, headers)
            error = answer.json()["error"]
            assert error["code"] == "invalid_api_key"
            assert error["type"] == "invalid_request_error"
    got = (await keys.client.get(f"/v1/projects/{project}/keys/{key['id']}")).json()
    assert (got["name"], got["status"], got["hint"]) == ("key", "active", key["hint"])


async def test_verify_needs_the_internal_token(keys: Running) -> None:
    project = await keys.project()
    key = await keys.key(project)
    body = {"key_hash": apikeys.hash_key(key["key"])}
    for token in (ADMIN_TOKEN, key["key"], f"{INTERNAL_TOKEN}x", ""):
        answer = await keys.client.post(
            "/internal/v1/keys/verify", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 401, token
        assert answer.json()["error"]["code"] == "invalid_api_key"
    answer = await keys.client.post("/internal/v1/keys/verify", json=body, headers=INTERNAL)
    assert answer.status_code == 200
    assert answer.json()["key_id"] == key["id"]


async def test_verify_answers_whole_state_or_404(keys: Running) -> None:
    project = await keys.project()
    key = await keys.key(project, "gw")
    state = (await keys.verify(apikeys.hash_key(key["key"]))).json()
    assert state == {
        "key_id": key["id"],
        "project_id": project,
        "name": "gw",
        "hint": key["hint"],
        "key_hash": apikeys.hash_key(key["key"]),
        "previous_key_hash": None,
        "previous_valid_until": None,
        "status": "active",
        "is_default": True,
        "expires_at": None,
        "created_at": state["created_at"],
        "version": 1,
        # No policy of its own nor of its project: every limit null.
        "rate_limits": None,
        "budget": None,
        "allowed_models": None,
        "allowed_endpoints": None,
        "project_rate_limits": None,
        "project_budget": None,
        "mac": state["mac"],
    }
    assert KEYRING.verify(KeyState.model_validate(state)), "the answer is signed"
    unknown = await keys.verify(apikeys.hash_key(apikeys.generate()))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    for bad in ("abc", "G" * 64, apikeys.hash_key("x").upper(), 5):
        answer = await keys.client.post(
            "/internal/v1/keys/verify", json={"key_hash": bad}, headers=INTERNAL
        )
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["param"] == "key_hash"


@pytest.mark.parametrize(
    ("admin", "internal"),
    [
        ("a-real-admin-token-0123456789", ""),
        ("a-real-admin-token-0123456789", "changeme"),
        ("a-real-admin-token-0123456789", "short"),
        ("same-token-for-both-0123456789", "same-token-for-both-0123456789"),
        ("", "a-real-internal-token-0123456789"),
    ],
)
@pytest.mark.unit
def test_settings_refuse_missing_placeholder_or_shared_tokens(admin: str, internal: str) -> None:
    with pytest.raises(ValidationError):
        KeysSettings(admin_token=SecretStr(admin), internal_token=SecretStr(internal))


@pytest.mark.unit
def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_KEYS_ADMIN_TOKEN", "env-admin-token-0123456789")
    monkeypatch.setenv("TOLLGATE_KEYS_INTERNAL_TOKEN", "env-internal-token-0123456789")
    monkeypatch.setenv("TOLLGATE_KEYS_STATE_MAC_KEYS", "k1:env-state-mac-keys-0123456789")
    monkeypatch.setenv("TOLLGATE_KEYS_KAFKA_BOOTSTRAP", "kafka.example:9092")
    monkeypatch.setenv("TOLLGATE_KEYS_DATABASE_URL", "postgresql://u@db.example/tollgate")
    settings = KeysSettings()
    assert settings.kafka_bootstrap == "kafka.example:9092"
    assert settings.database_url.get_secret_value() == "postgresql://u@db.example/tollgate"
    assert settings.internal_token.get_secret_value() == "env-internal-token-0123456789"
    assert settings.db_schema == "keys"
    assert settings.keys_topic == "keys.events"
