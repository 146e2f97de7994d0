"""At a service's start, what retrying cannot fix is told apart from an outage.

A certificate the engine's CA does not vouch for (or one expired), credentials refused, a
topic the service's Kafka user may not describe: each stops the service at start with one
log line naming the engine, the setting and the cause (``EngineRefused``), since no back-off
would ever mend it, and an operator reads one line rather than a loop of reconnections. An
engine that does not answer (down, unreachable) is an outage, which every service already
rides out (its workers retry): the check lets it pass. Only secured connections are checked
(a plaintext one has no certificate or credentials to get wrong).

Kafka's client hides the cause behind "Unable to bootstrap": the check opens one connection
itself (aiokafka's ``create_conn``, the TLS handshake and SASL exchange the clients will do),
which raises the real one. PostgreSQL's refusals surface from the pool's creation
(``database_refusal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, TopicAuthorizationFailedError
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
)

from shared.kafka_security import KafkaAccess
from shared.redis_client import RedisAuth, connect
from shared.settings import ServiceSettings
from shared.topics import topic_name

log = logging.getLogger(__name__)


class EngineRefused(RuntimeError):
    """An engine refused this service for a reason no retry mends: its one log line."""

    def __init__(self, engine: str, setting: str, cause: str) -> None:
        super().__init__(f"{engine} refused this service: {setting}: {cause}")
        self.engine = engine
        self.setting = setting
        self.cause = cause


def _tls_refusal(engine: str, ca: str, cert: str, exc: ssl.SSLError) -> EngineRefused:
    """A certificate the CA setting does not vouch for (or expired), or a handshake the
    engine refused (a client certificate it does not take)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return EngineRefused(engine, ca, f"its certificate is not trusted ({exc.verify_message})")
    return EngineRefused(engine, cert, f"the TLS handshake failed ({exc.reason or exc})")


async def check_kafka(access: KafkaAccess, topics: Sequence[str], timeout_s: float = 10.0) -> None:
    """EngineRefused when Kafka refuses the certificate, the credentials or a topic's ACL."""
    if access.security_protocol == "PLAINTEXT":
        return
    options = access.client_options()
    options.pop("bootstrap_servers")
    answered = False
    for server in access.servers:
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options),
                timeout_s,
            )
        except ssl.SSLError as exc:
            raise _tls_refusal("Kafka", "KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", exc) from exc
        except SaslAuthenticationFailed as exc:
            raise EngineRefused(
                "Kafka",
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
                f"{access.sasl_mechanism} refused user {access.sasl_username!r}",
            ) from exc
        except (OSError, TimeoutError, KafkaError):
            continue  # this one does not answer: an outage, or try the next
        conn.close()
        answered = True
        break
    if not answered:
        log.warning(
            "Kafka does not answer at start; its workers retry", extra={"kafka": access.describe()}
        )
        return
    await _check_topics(access, topics, timeout_s)


async def _check_topics(access: KafkaAccess, topics: Sequence[str], timeout_s: float) -> None:
    admin = AIOKafkaAdminClient(**access.client_options(), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        described = await asyncio.wait_for(admin.describe_topics(list(topics)), timeout_s)
    except (OSError, TimeoutError, KafkaError):
        return  # gone between the two: an outage
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    for topic in described:
        if topic.get("error_code") == TopicAuthorizationFailedError.errno:
            raise EngineRefused(
                "Kafka",
                "its ACLs",
                f"user {access.sasl_username!r} may not describe topic {topic['topic']!r}: "
                "grant what the service uses (docs/secure-transport.md)",
            )


async def check_redis(url: str, auth: RedisAuth, *, cluster: bool, timeout_s: float = 5.0) -> None:
    """EngineRefused when Redis refuses the certificate or the ACL user."""
    if not url.startswith("rediss://") and auth.password is None:
        return
    client = connect(url, cluster=cluster, timeout_s=timeout_s, auth=auth)
    try:
        await asyncio.wait_for(client.ping(), timeout_s)
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        refusal = _redis_refusal(exc, auth)
        if refusal is not None:
            raise refusal from exc
        log.warning(
            "Redis does not answer at start; it is retried", extra={"error": type(exc).__name__}
        )
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


def _redis_refusal(exc: BaseException, auth: RedisAuth) -> EngineRefused | None:
    """The refusal in exc or what caused it (the cluster client wraps its nodes' errors)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, AuthenticationError):
            return EngineRefused(
                "Redis", "REDIS_USERNAME and REDIS_PASSWORD", f"user {auth.username!r} refused"
            )
        if isinstance(seen, NoPermissionError):
            return EngineRefused("Redis", "its ACLs", str(seen))
        if isinstance(seen, ssl.SSLError):
            return _tls_refusal("Redis", "REDIS_SSL_CA_CERTS", "REDIS_SSL_CERTFILE", seen)
        if "certificate verify failed" in str(seen):
            return EngineRefused(
                "Redis", "REDIS_SSL_CA_CERTS", f"its certificate is not trusted ({seen})"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def database_refusal(exc: BaseException) -> EngineRefused | None:
    """The refusal a pool's creation met, when retrying cannot mend it; else None."""
    if isinstance(exc, ssl.SSLError):
        return _tls_refusal(
            "PostgreSQL", "DATABASE_URL (sslrootcert)", "DATABASE_URL (sslcert)", exc
        )
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return EngineRefused("PostgreSQL", "DATABASE_URL", str(exc).splitlines()[0])
    return None


def refused_at_start(exc: EngineRefused) -> None:
    """The one log line of a refusal (the service then stops)."""
    log.critical(str(exc), extra={"engine": exc.engine, "setting": exc.setting})


async def check_engines(
    settings: ServiceSettings, *, topics: Sequence[str] = (), redis: bool = False
) -> None:
    """A service's start: its Kafka (the topics it uses, by name without the prefix) and its
    Redis, when secured; EngineRefused, logged in one line, stops it."""
    try:
        if topics:
            named = [topic_name(t, settings.topic_prefix) for t in topics]
            await check_kafka(settings.kafka, named)
        if redis:
            await check_redis(
                settings.redis_url, settings.redis_auth, cluster=settings.redis_cluster
            )
    except EngineRefused as exc:
        refused_at_start(exc)
        raise
