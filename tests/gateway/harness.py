"""Real processes-in-a-loop for the gateway tests: servers on free ports, keys, events."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI, Header, Response
from pydantic import BaseModel, SecretStr

from deploy.ports import free_port
from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.transport.http_protocol import GatewayProtocol
from shared.apikeys import generate, hash_key, hint
from shared.events import KeyEvent, KeyEventType, KeyState, UsageRecorded
from shared.topics import KEYS_EVENTS, USAGE_EVENTS
from tests.served import Served
from tests.state_macs import STATE_MAC_KEYS, sign

INTERNAL_TOKEN = "internal-token-for-gateway-tests"
CHAT = "Qwen/Qwen2.5-0.5B-Instruct"
EMBED = "Qwen/Qwen3-Embedding-0.6B"


class VerifyBody(BaseModel):
    key_hash: str


@dataclass
class FakeKeyService:
    """Stands in for the key service's verify endpoint, over real HTTP."""

    states: dict[str, KeyState] = field(default_factory=dict)
    calls: int = 0

    def add(self, state: KeyState) -> None:
        state = sign(state)  # as the real one answers: signed, whatever the test changed
        self.states[state.key_hash] = state
        if state.previous_key_hash:
            self.states[state.previous_key_hash] = state

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/internal/v1/keys/verify")
        async def verify(body: VerifyBody, authorization: str = Header("")) -> Response:
            self.calls += 1
            if authorization != f"Bearer {INTERNAL_TOKEN}":
                return Response(status_code=401)
            state = self.states.get(body.key_hash)
            if state is None:
                error = b'{"error":{"message":"unknown key","type":"invalid_request_error"}}'
                return Response(error, 404, media_type="application/json")
            return Response(state.model_dump_json(), media_type="application/json")

        return app


def new_key(project: str = "proj_test", version: int = 1, **changes: Any) -> tuple[str, KeyState]:
    """A fresh secret and the state the key service would hold for it (signed: a test that
    changes it with model_copy signs it again, as publish_key and FakeKeyService.add do)."""
    secret = generate()
    key_id = "key_" + hashlib.sha256(secret.encode()).hexdigest()[:16]
    state = KeyState(
        key_id=key_id,
        project_id=project,
        name="test",
        hint=hint(secret),
        key_hash=hash_key(secret),
        version=version,
        created_at=datetime.now(UTC),
        **changes,
    )
    return secret, sign(state)


def write_catalogue(folder: Path, upstream_url: str) -> Path:
    """The demo catalogue plus test models whose upstream names carry the demo's knobs."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    rows = [
        (CHAT, "chat", CHAT, upstream_url, 30),
        (EMBED, "embedding", EMBED, upstream_url, 60),
        ("test/error-500", "chat", CHAT + "#status=500", upstream_url, 30),
        ("test/rate-limited", "chat", CHAT + "#status=429", upstream_url, 30),
        ("test/slow", "chat", CHAT + "#delay_ms=3000", upstream_url, 0.5),
        ("test/no-usage", "chat", CHAT + "#no_usage", upstream_url, 30),
        ("test/no-usage-embed", "embedding", EMBED + "#no_usage", upstream_url, 30),
        ("test/slow-stream", "chat", CHAT + "#chunk_delay_ms=100", upstream_url, 30),
        ("test/unreachable", "chat", CHAT, dead, 5),
    ]
    lines = ["models:"]
    for model_id, kind, upstream_model, url, timeout in rows:
        lines += [
            f"  - id: {model_id}",
            f"    kind: {kind}",
            "    upstream:",
            f"      base_url: {url}",
            f'      model: "{upstream_model}"',
            f"      timeout_s: {timeout}",
            "    prices:",
            '      - effective_from: "2026-01-01T00:00:00Z"',
            '        input_per_million: "0.1"',
            '        output_per_million: "0.2"',
        ]
    path = folder / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def gateway_settings(
    *,
    kafka: str,
    redis: str,
    prefix: str,
    redis_prefix: str,
    keys_url: str,
    catalogue: Path,
    spool: Path,
    **extra: Any,
) -> GatewaySettings:
    return GatewaySettings(
        kafka_bootstrap=kafka,
        redis_url=redis,
        topic_prefix=prefix,
        redis_prefix=redis_prefix,
        keys_url=keys_url,
        catalogue_path=catalogue,
        spool_dir=spool,
        internal_token=SecretStr(INTERNAL_TOKEN),
        log_json=False,
        **({"state_mac_keys": SecretStr(STATE_MAC_KEYS)} | extra),
    )


async def start_gateway(settings: GatewaySettings, *, ready: bool = True) -> Served:
    """A gateway served on a free port; by default, once its feeder has caught up."""
    served = await Served(create_app(settings), http=GatewayProtocol).start()
    if ready:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                if (await client.get(served.url + "/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("gateway never became ready")
    return served


async def publish_key(
    bootstrap: str, prefix: str, state: KeyState, event_type: KeyEventType = "key.created"
) -> None:
    """Publish a key event as the key service's outbox would (signed)."""
    state = sign(state)
    event = KeyEvent(type=event_type, occurred_at=datetime.now(UTC), **state.model_dump())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            prefix + KEYS_EVENTS, event.to_bytes(), key=state.key_id.encode()
        )
    finally:
        await producer.stop()


async def usage_events(
    bootstrap: str, prefix: str, count: int, timeout: float = 20.0
) -> list[UsageRecorded]:
    """At least count distinct usage events from the prefixed topic (fails after timeout)."""
    consumer = AIOKafkaConsumer(
        prefix + USAGE_EVENTS,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, UsageRecorded] = {}
    keys: dict[str, bytes | None] = {}
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    event = UsageRecorded.model_validate_json(record.value)
                    found[str(event.event_id)] = event
                    keys[str(event.event_id)] = record.key
    finally:
        await consumer.stop()
    assert len(found) >= count, f"expected {count} usage events, got {len(found)}"
    for event_id, event in found.items():
        assert keys[event_id] == event.key_id.encode(), "usage events are keyed by key id"
    return sorted(found.values(), key=lambda e: e.event_id)


async def upstream_requests(upstream_url: str) -> int:
    async with httpx.AsyncClient() as client:
        return int((await client.get(upstream_url + "/demo/stats")).json()["requests"])
