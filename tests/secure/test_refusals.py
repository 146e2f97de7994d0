"""What no retry mends stops a service at start, in one log line naming the engine, the
setting and the cause: a certificate from another CA, one expired, a wrong password, a
missing ACL; an engine that does not answer is an outage, which the services ride out."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.exceptions import RedisError

from deploy.pki import Pki, ensure_pki, issue
from deploy.ports import free_port
from deploy.process import port_open
from deploy.secure import SecureEngines
from services.metering.main import create_app as create_metering
from services.metering.settings import MeteringSettings
from shared.db import create_pool
from shared.engine_checks import EngineRefused, check_kafka, check_redis
from shared.kafka_security import KafkaAccess
from shared.redis_client import RedisAuth, connect

pytestmark = [pytest.mark.secure, pytest.mark.slow]


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("refusals-pki"))


def kafka_as(engines: SecureEngines, user: str, **change: Any) -> KafkaAccess:
    """user's connection to the secured Kafka, with change (a wrong password, say)."""
    return replace(engines.kafka_access(user), **change)


async def test_kafka_refusals_are_told_apart(engines: SecureEngines, other_ca: Pki) -> None:
    await check_kafka(kafka_as(engines, "gateway"), ["keys.events", "usage.events"])  # fine
    with pytest.raises(EngineRefused, match="KAFKA_SSL_CAFILE: its certificate is not trusted"):
        await check_kafka(kafka_as(engines, "gateway", ssl_cafile=other_ca.ca), ["keys.events"])
    wrong = SecretStr("not-the-password-0123")
    with pytest.raises(EngineRefused, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        await check_kafka(kafka_as(engines, "gateway", sasl_password=wrong), ["keys.events"])
    with pytest.raises(EngineRefused, match=r"may not describe topic 'audit\.events'") as refused:
        await check_kafka(kafka_as(engines, "gateway"), ["keys.events", "audit.events"])
    assert refused.value.engine == "Kafka"
    assert engines.passwords["gateway"] not in str(refused.value)
    # Nothing listens: an outage, not a refusal (the workers retry).
    down = kafka_as(engines, "gateway", bootstrap=f"localhost:{free_port()}")
    await check_kafka(down, ["keys.events"], timeout_s=2)


@pytest.fixture
async def expired_server(other_ca: Pki, tmp_path: Path) -> AsyncIterator[tuple[int, Pki]]:
    """A TLS server on 127.0.0.1 whose certificate expired in 2020 (signed by its own CA)."""
    pki = ensure_pki(tmp_path / "expired-pki")
    issue(pki, "old", "localhost", alt_names=("DNS:localhost", "IP:127.0.0.1"), expired=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert("old"), pki.key("old"))

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    yield port, pki
    server.close()
    await server.wait_closed()


async def test_an_expired_certificate_is_named(expired_server: tuple[int, Pki]) -> None:
    port, pki = expired_server
    access = KafkaAccess(
        f"localhost:{port}",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="gateway",
        sasl_password=SecretStr("whatever-0123456789"),
        ssl_cafile=pki.ca,
    )
    with pytest.raises(EngineRefused, match="certificate has expired"):
        await check_kafka(access, ["keys.events"], timeout_s=5)
    auth = RedisAuth(ca_certs=pki.ca, username="gateway", password=SecretStr("x" * 20))
    with pytest.raises(EngineRefused, match=r"REDIS_SSL_CA_CERTS: .*certificate has expired"):
        await check_redis(f"rediss://localhost:{port}/0", auth, cluster=False, timeout_s=5)


async def test_redis_and_postgres_refusals_are_told_apart(
    engines: SecureEngines, other_ca: Pki
) -> None:
    url = engines.redis.url
    await check_redis(url, engines.redis_auth("gateway"), cluster=False)  # fine
    wrong = RedisAuth(ca_certs=engines.pki.ca, username="gateway", password=SecretStr("wrong"))
    with pytest.raises(EngineRefused, match="REDIS_USERNAME and REDIS_PASSWORD"):
        await check_redis(url, wrong, cluster=False)
    untrusted = RedisAuth(
        ca_certs=other_ca.ca, username="gateway", password=SecretStr(engines.passwords["gateway"])
    )
    with pytest.raises(EngineRefused, match="REDIS_SSL_CA_CERTS"):
        await check_redis(url, untrusted, cluster=False)
    dsn = engines.postgres.dsn_of("metering")
    with pytest.raises(EngineRefused, match="PostgreSQL refused this service: DATABASE_URL"):
        await create_pool(dsn.replace(engines.passwords["metering"], "wrong"), "public")
    with pytest.raises(EngineRefused, match=r"DATABASE_URL \(sslrootcert\): its certificate"):
        await create_pool(dsn.replace(str(engines.pki.ca), str(other_ca.ca)), "public")


async def test_a_service_stops_at_start_with_one_line(
    engines: SecureEngines, capfd: pytest.CaptureFixture[str]
) -> None:
    env = engines.service_settings("metering")
    settings = MeteringSettings(
        admin_token=SecretStr("refusal-admin-token-0123456789"),
        internal_token=SecretStr("refusal-internal-token-0123456789"),
        kafka_bootstrap=env["KAFKA_BOOTSTRAP"],
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="metering",
        kafka_sasl_password=SecretStr("not-metering's-password"),
        kafka_ssl_cafile=engines.pki.ca,
        database_url=SecretStr(env["DATABASE_URL"]),
        db_schema="refusal_test",
    )
    app = create_metering(settings)  # its logs: JSON lines on stderr
    with pytest.raises(EngineRefused):
        async with app.router.lifespan_context(app):
            pass
    logged = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    critical = [entry for entry in logged if entry["level"] == "CRITICAL"]
    assert [entry["message"] for entry in critical] == [
        "Kafka refused this service: KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: "
        "SCRAM-SHA-512 refused user 'metering'"
    ]
    assert critical[0]["engine"] == "Kafka"
    assert "not-metering's-password" not in json.dumps(logged)


@pytest.fixture
def mutual_redis(engines: SecureEngines, tmp_path: Path) -> Iterator[int]:
    """A Redis that takes only clients with a certificate from the CA (mutual TLS)."""
    port = free_port()
    child = subprocess.Popen(
        [
            "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(engines.pki.cert("server")),
            "--tls-key-file", str(engines.pki.key("server")),
            "--tls-ca-cert-file", str(engines.pki.ca),
            "--tls-auth-clients", "yes", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if port_open(port):
                break
            time.sleep(0.05)
        yield port
    finally:
        child.terminate()
        child.wait(10)


async def test_mutual_tls_takes_the_client_certificate(
    engines: SecureEngines, mutual_redis: int
) -> None:
    url = f"rediss://localhost:{mutual_redis}/0"
    with_cert = RedisAuth(
        ca_certs=engines.pki.ca,
        certfile=engines.pki.cert("client"),
        keyfile=engines.pki.key("client"),
    )
    await check_redis(url, with_cert, cluster=False)
    client = connect(url, cluster=False, timeout_s=5, auth=with_cert)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    # Without one the server refuses the connection. Under TLS 1.3 its alert comes after the
    # handshake, so the client may see the alert (a refusal naming REDIS_SSL_CERTFILE) or only
    # the connection closed (taken for an outage): either way nothing is served.
    without = connect(url, cluster=False, timeout_s=5, auth=RedisAuth(ca_certs=engines.pki.ca))
    try:
        with pytest.raises((RedisError, OSError)):
            await without.ping()
    finally:
        await without.aclose()
