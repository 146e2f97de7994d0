"""Pure unit tests of shared/: key format, events, log redaction, settings, error shape."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, SecretStr, ValidationError

from shared import apikeys
from shared.errors import NotFound, install_error_handlers
from shared.events import KeyEvent, UsageRecorded
from shared.logs import JsonFormatter, redact
from shared.settings import TokenGuardedSettings

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def test_generated_keys_are_well_formed_and_distinct() -> None:
    keys = {apikeys.generate() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("sk-tg-")
        assert len(key) == apikeys.KEY_LENGTH
        assert apikeys.is_well_formed(key)


def test_checksum_refuses_a_single_changed_character() -> None:
    key = apikeys.generate()
    i = 20
    swapped = key[:i] + ("A" if key[i] != "A" else "B") + key[i + 1 :]
    assert not apikeys.is_well_formed(swapped)
    assert not apikeys.is_well_formed(key[:-1])
    assert not apikeys.is_well_formed("sk-" + key[6:])
    assert not apikeys.is_well_formed(key[:-1] + "!")


def test_hash_and_hint() -> None:
    key = apikeys.generate()
    assert len(apikeys.hash_key(key)) == 64
    assert apikeys.hint(key) == "sk-..." + key[-4:]


def _key_event(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "type": "key.created",
        "occurred_at": datetime.now(UTC),
        "key_id": "key_1",
        "project_id": "proj_1",
        "name": "dev",
        "hint": "sk-...abcd",
        "key_hash": "a" * 64,
        "version": 1,
    }
    fields.update(overrides)
    return fields


def test_events_are_frozen_strict_and_round_trip() -> None:
    event = KeyEvent.model_validate(_key_event())
    assert KeyEvent.model_validate_json(event.to_bytes()) == event
    assert event.event_id.version == 7
    with pytest.raises(ValidationError):
        KeyEvent.model_validate(_key_event(secret="sk-oops"))
    with pytest.raises(ValidationError):
        KeyEvent.model_validate(_key_event(occurred_at=datetime(2026, 1, 1)))  # noqa: DTZ001
    with pytest.raises(ValidationError):
        event.name = "other"  # type: ignore[misc]


def test_usage_event_refuses_negative_tokens() -> None:
    with pytest.raises(ValidationError):
        UsageRecorded(
            occurred_at=datetime.now(UTC),
            request_id="r",
            project_id="p",
            key_id="k",
            model="m",
            endpoint="/v1/embeddings",
            input_tokens=-1,
            status_code=200,
            latency_ms=1,
        )


def test_logs_never_carry_a_secret() -> None:
    key = apikeys.generate()
    record = logging.makeLogRecord(
        {"msg": "auth %s", "args": (key,), "levelname": "INFO", "header": f"Bearer {key}"}
    )
    line = JsonFormatter("test").format(record)
    assert key not in line
    assert json.loads(line)["message"] == "auth sk-[redacted]"
    assert redact("openai sk-proj-abcdefghijklmnopqrstuv") == "openai sk-[redacted]"


def test_placeholder_admin_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_ADMIN_TOKEN", "changeme")
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        TokenGuardedSettings()
    monkeypatch.setenv("TOLLGATE_ADMIN_TOKEN", "x" * 32)
    assert TokenGuardedSettings().admin_token == SecretStr("x" * 32)


class _Body(BaseModel):
    name: str


def test_errors_come_in_openai_shape() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("No such key: key_1", param="key_id")

    @app.post("/things")
    async def things(body: _Body) -> str:
        return body.name

    client = TestClient(app)
    got = client.get("/missing")
    assert got.status_code == 404
    assert got.json() == {
        "error": {
            "message": "No such key: key_1",
            "type": "invalid_request_error",
            "code": "not_found",
            "param": "key_id",
        }
    }
    bad = client.post("/things", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    wrong_type = client.post("/things", json={"name": 5})
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"]["param"] == "name"
