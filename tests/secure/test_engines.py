"""The secured engines (deploy/secure.py), on real servers: each service connects over TLS with
its own credentials and reaches what it uses; a plaintext client, a wrong password and a
wrong CA are refused by each engine; an ACL keeps each service to its own topics, keys and
schema, with a clear error. (`make test-secure`: the engines start once per run folder.)"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError

from deploy.pki import Pki, ensure_pki
from deploy.secure import ADMIN_USER, SecureEngines
from shared.events import UsageRecorded, utc_now
from shared.kafka import idempotent_producer
from shared.kafka_security import KafkaAccess, kafka_options
from shared.redis_client import RedisAuth, connect
from shared.settings import TokenGuardedSettings

pytestmark = [pytest.mark.secure, pytest.mark.slow]


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA the engines' certificates were not signed by."""
    return ensure_pki(tmp_path_factory.mktemp("other-pki"))


def kafka_of(engines: SecureEngines, user: str, **change: Any) -> KafkaAccess:
    """user's connection to the secured Kafka, with change (a wrong password, say)."""
    return replace(engines.kafka_access(user), **change)


def _record(topic: str) -> bytes:
    """What a test writes: a real usage event on usage.events (counted for a project no one
    reads), an empty object elsewhere (on topics nothing of Tollgate parses)."""
    if topic != "usage.events":
        return b"{}"
    return UsageRecorded(
        occurred_at=utc_now(),
        request_id=f"req_secure{uuid.uuid4().hex[:12]}",
        project_id="proj_secureEngineTest",
        key_id="key_secureEngineTest",
        model="Qwen/Qwen2.5-0.5B-Instruct",
        endpoint="/v1/chat/completions",
        input_tokens=1,
        output_tokens=1,
        status_code=200,
        latency_ms=1,
    ).to_bytes()


async def _produce(access: KafkaAccess | str, topic: str) -> None:
    producer = idempotent_producer(
        access, f"secure-test-{uuid.uuid4().hex[:6]}", request_timeout_ms=5000
    )
    try:
        await asyncio.wait_for(producer.start(), 15)
        await asyncio.wait_for(producer.send_and_wait(topic, _record(topic), key=b"k"), 15)
    finally:
        await producer.stop()


async def _read_one(access: KafkaAccess, topic: str) -> None:
    consumer = AIOKafkaConsumer(**kafka_options(access), enable_auto_commit=False)
    try:
        await asyncio.wait_for(consumer.start(), 15)
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        await asyncio.wait_for(consumer.getmany(timeout_ms=500), 15)
        await consumer.position(partition)
    finally:
        await consumer.stop()


async def test_each_service_reaches_what_it_uses_over_tls(engines: SecureEngines) -> None:
    await _produce(kafka_of(engines, "gateway"), "usage.events")
    await _read_one(kafka_of(engines, "gateway"), "keys.events")
    await _produce(kafka_of(engines, "keys"), "audit.events")
    await _produce(kafka_of(engines, "metering"), "usage.events.dlq")
    # Redis: the gateway and the key service on Tollgate's keys; TLS checked.
    client = connect(
        engines.redis.url, cluster=False, timeout_s=5, auth=engines.redis_auth("gateway")
    )
    try:
        await client.set("tollgate:gw:secure-test", "1")
        assert await client.get("tollgate:gw:secure-test") == b"1"
    finally:
        await client.aclose()
    # PostgreSQL: metering's own role creates and uses a schema of its own, over verify-full.
    conn = await asyncpg.connect(engines.postgres.dsn_of("metering"))
    try:
        schema = f"secure_{uuid.uuid4().hex[:8]}"
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}".t (x int)')
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_settings_of_each_service_connect(engines: SecureEngines) -> None:
    """What `TOLLGATE_SECURE=1` hands a service is accepted by its settings and connects."""
    for service in ("keys", "gateway", "metering", "billing"):
        env = engines.service_settings(service)
        values: dict[str, Any] = {name.lower(): value for name, value in env.items()}
        settings = TokenGuardedSettings(
            admin_token=SecretStr("secure-admin-token-0123456789"), **values
        )
        assert settings.kafka.security_protocol == "SASL_SSL"
        assert engines.passwords[service] not in repr(settings)
    gateway = engines.service_settings("gateway")
    assert "DATABASE_URL" not in gateway, "the gateway has no database credentials"
    assert "REDIS_URL" not in engines.service_settings("metering")


async def test_plaintext_is_refused_by_every_engine(engines: SecureEngines) -> None:
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        await _produce(engines.kafka.bootstrap, "usage.events")  # plaintext to the TLS port
    plain = aioredis.Redis(host="127.0.0.1", port=engines.ports.redis, socket_timeout=2)
    with pytest.raises((ConnectionError, OSError)):
        await plain.ping()
    await plain.aclose()
    no_tls = engines.postgres.dsn_of("metering").replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(no_tls)


async def test_a_wrong_password_is_refused_by_every_engine(engines: SecureEngines) -> None:
    wrong = SecretStr("not-the-password-0123456789")
    with pytest.raises(KafkaError):
        await _produce(kafka_of(engines, "gateway", sasl_password=wrong), "usage.events")
    auth = RedisAuth(ca_certs=engines.pki.ca, username="gateway", password=wrong)
    client = connect(engines.redis.url, cluster=False, timeout_s=5, auth=auth)
    with pytest.raises(AuthenticationError):
        await client.ping()
    await client.aclose()
    dsn = engines.postgres.dsn_of("metering").replace(engines.passwords["metering"], "wrong")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(dsn)


async def test_a_certificate_from_another_ca_is_refused(
    engines: SecureEngines, other_ca: Pki
) -> None:
    with pytest.raises((KafkaConnectionError, KafkaError, ssl.SSLError, asyncio.TimeoutError)):
        await _produce(kafka_of(engines, "gateway", ssl_cafile=other_ca.ca), "usage.events")
    auth = RedisAuth(
        ca_certs=other_ca.ca, username="gateway", password=SecretStr(engines.passwords["gateway"])
    )
    client = connect(engines.redis.url, cluster=False, timeout_s=5, auth=auth)
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        await client.ping()
    await client.aclose()
    dsn = engines.postgres.dsn_of("metering").replace(str(engines.pki.ca), str(other_ca.ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(dsn)


async def test_each_service_is_kept_to_its_own(engines: SecureEngines) -> None:
    # Kafka ACLs: the gateway may write usage but not read it, nor write key events;
    # metering may not write key events.
    with pytest.raises(TopicAuthorizationFailedError, match=r"keys\.events"):
        await _produce(kafka_of(engines, "gateway"), "keys.events")
    with pytest.raises(TopicAuthorizationFailedError, match=r"keys\.events"):
        await _produce(kafka_of(engines, "metering"), "keys.events")
    with pytest.raises(TopicAuthorizationFailedError, match=r"usage\.events"):
        await _read_one(kafka_of(engines, "gateway"), "usage.events")
    # Redis ACLs: Tollgate's keys only; no user for metering at all.
    client = connect(
        engines.redis.url, cluster=False, timeout_s=5, auth=engines.redis_auth("gateway")
    )
    with pytest.raises(NoPermissionError):
        await client.get("someone-else:key")
    with pytest.raises(NoPermissionError):
        await client.execute_command("CONFIG", "GET", "requirepass")
    await client.aclose()
    assert "metering" not in (engines.redis.home / "users.acl").read_text()
    # PostgreSQL: the key service's schema is not metering's to read.
    keys_conn = await asyncpg.connect(engines.postgres.dsn_of("keys"))
    schema = f"secure_keys_{uuid.uuid4().hex[:8]}"
    try:
        await keys_conn.execute(f'CREATE SCHEMA "{schema}"')
        await keys_conn.execute(f'CREATE TABLE "{schema}".secrets (x int)')
        metering = await asyncpg.connect(engines.postgres.dsn_of("metering"))
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await metering.fetch(f'SELECT * FROM "{schema}".secrets')
        finally:
            await metering.close()
    finally:
        await keys_conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await keys_conn.close()


def test_secrets_stay_in_private_files(engines: SecureEngines) -> None:
    for path in (
        engines.folder / "credentials.json",
        engines.pki.ca_key,
        engines.pki.key("server"),
        engines.kafka.home / "server.properties",
        engines.redis.home / "users.acl",
    ):
        assert path.stat().st_mode & 0o077 == 0, path
    assert ADMIN_USER not in Path(engines.pki.ca).read_text()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_every_sasl_mechanism_and_a_client_certificate(
    engines: SecureEngines, mechanism: str
) -> None:
    await _produce(kafka_of(engines, "gateway", sasl_mechanism=mechanism), "usage.events")
    mutual = kafka_of(
        engines,
        "gateway",
        ssl_certfile=engines.pki.cert("client"),
        ssl_keyfile=engines.pki.key("client"),
    )
    await _produce(mutual, "usage.events")
