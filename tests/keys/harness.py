"""What the key service's tests share: settings on the real servers, a running app, readers.

The app runs in-process (its real lifespan: migrations, outbox relay, usage consumer) over
``httpx.ASGITransport``, on the test's own schema, topic prefix and consumer group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from pydantic import SecretStr

from services.keys.main import create_app
from services.keys.settings import KeysSettings
from shared.events import KeyEvent
from tests.polling import eventually
from tests.state_macs import STATE_MAC_KEYS

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
INTERNAL_TOKEN = "test-internal-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PERMISSIONS = [
    "projects:read",
    "projects:write",
    "keys:read",
    "keys:write",
    "usage:read",
    "costs:read",
    "audit:read",
    "admin_keys:write",
]


def bearer(secret: str) -> dict[str, str]:
    """The Authorization header of a secret (an admin key, an API key, a token)."""
    return {"Authorization": f"Bearer {secret}"}


INTERNAL = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}


def make_settings(
    *, kafka: str, database_url: str, schema: str, prefix: str, group: str, **extra: Any
) -> KeysSettings:
    """Settings for one test's own schema, topics and consumer group.

    The usage consumer is off unless a test asks for it: each one joins a consumer group of
    its own, which costs the shared broker a group each time.
    """
    defaults: dict[str, Any] = {
        "relay_poll_s": 0.2,
        "consume_usage": False,
        "redis_prefix": f"test:{schema}:",  # the direct Redis writes, apart per test
    }
    return KeysSettings(
        kafka_bootstrap=kafka,
        database_url=SecretStr(database_url),
        admin_token=SecretStr(ADMIN_TOKEN),
        internal_token=SecretStr(INTERNAL_TOKEN),
        state_mac_keys=SecretStr(STATE_MAC_KEYS),
        db_schema=schema,
        topic_prefix=prefix,
        consumer_group=group,
        **(defaults | extra),
    )


@dataclass
class Running:
    """A key service running in-process, and a client of it with the operator token."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: KeysSettings

    async def project(self, name: str = "proj") -> str:
        answer = await self.client.post("/v1/projects", json={"name": name})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def key(self, project_id: str, name: str = "key", **body: Any) -> dict[str, Any]:
        answer = await self.client.post(
            f"/v1/projects/{project_id}/keys", json={"name": name, **body}
        )
        assert answer.status_code == 201, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def admin_key(
        self,
        permissions: list[str],
        project_ids: list[str] | None = None,
        name: str = "admin",
        *,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A new admin key (by root unless headers say who); project_ids None: organization."""
        scope = {"organization": True} if project_ids is None else {"project_ids": project_ids}
        answer = await self.client.post(
            "/v1/organization/admin_api_keys",
            json={"name": name, "scope": scope, "permissions": permissions},
            headers=headers,
        )
        assert answer.status_code == 201, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def verify(self, key_hash: str) -> httpx.Response:
        return await self.client.post(
            "/internal/v1/keys/verify", json={"key_hash": key_hash}, headers=INTERNAL
        )


@asynccontextmanager
async def running(settings: KeysSettings) -> AsyncIterator[Running]:
    """Start the app's lifespan and yield a client of it; stop it all afterwards."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://keys.test", headers=AUTH, timeout=30
        ) as client:
            yield Running(app, client, settings)


async def connect(database_url: str, schema: str) -> asyncpg.Connection:
    """A connection whose search path is the test's schema."""
    return await asyncpg.connect(database_url, server_settings={"search_path": schema})


async def dump(conn: asyncpg.Connection, schema: str) -> dict[str, list[str]]:
    """Every row of every table of schema, as text (to compare, or to search for secrets)."""
    tables = await conn.fetch(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name",
        schema,
    )
    out: dict[str, list[str]] = {}
    for t in tables:
        name = t["table_name"]
        rows = await conn.fetch(f'SELECT t::text AS row FROM "{schema}"."{name}" AS t ORDER BY 1')
        out[name] = [r["row"] for r in rows]
    return out


@dataclass(frozen=True)
class Record:
    """One keys.events message as it is on the topic."""

    key: bytes
    value: bytes
    partition: int
    offset: int

    @property
    def event(self) -> KeyEvent:
        return KeyEvent.model_validate_json(self.value)


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[Record]:
    """At least count records of topic from its start (all partitions), waiting for them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[Record] = []
    try:

        async def more() -> int:
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                seen.extend(
                    Record(r.key or b"", r.value or b"", r.partition, r.offset) for r in records
                )
            return len(seen)

        await eventually(more, until=lambda n: n >= count, timeout=timeout, what=f"{count} events")
        await more()  # anything that followed right behind
    finally:
        await consumer.stop()
    return seen


def by_key(records: list[Record]) -> dict[str, list[KeyEvent]]:
    """The events of each key, in topic order (one key lives on one partition)."""
    out: dict[str, list[KeyEvent]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert r.key.decode() == r.event.key_id
        out.setdefault(r.event.key_id, []).append(r.event)
    return out
