"""Kafka plumbing: topic creation with configs, and the one producer configuration we use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared.topics import TOPICS, TopicSpec

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec] = TOPICS, prefix: str = "", timeout: float = 30.0
) -> None:
    """Create each topic that does not exist yet, with its partitions and configs."""
    wanted = [spec.with_prefix(prefix) for spec in specs]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in wanted if s.name not in existing]
        if not missing:
            return
        new = [NewTopic(s.name, s.partitions, 1, topic_configs=s.configs) for s in missing]
        # Another replica may create a topic between our list and our create.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
        log.info("created topics", extra={"topics": [s.name for s in missing]})
    finally:
        await admin.close()


def idempotent_producer(bootstrap: str, client_id: str, **overrides: object) -> AIOKafkaProducer:
    """A producer that neither loses nor duplicates what the broker acknowledged."""
    options: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "request_timeout_ms": 10_000,
        "compression_type": None,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def broker_reachable(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when the cluster answers a metadata request within timeout."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True
