"""The bus on FastStream: the broker every service builds, and the publishers and subscribers
that run on it, each declared once here.

The services call these functions to bind what they run, and ``shared/bus_spec.py`` calls
the same ones to write the AsyncAPI document, so the document describes the declarations
that run. Where a part needs what FastStream cannot give, it stays on aiokafka and says why
in its docstring; ``bus_spec.py`` declares those for the document alone.

Two things every subscriber here does, and why:

- **Headers are never parsed.** FastStream's Kafka parser decodes every header value as
  UTF-8; a record with a header that is not (or a null header, which Kafka allows) would fail
  the parse before any handler ran, and with the batch never acknowledged its consumer would
  stall on it. ``raw_records`` drops the headers before FastStream's parser sees them (no
  consumer here reads them), and ``raw_body`` hands the handler the records themselves, so
  a value that is not JSON reaches the handler, which dead-letters it.
- **Topics are Tollgate's.** ``Topic(..., declare=False)``: FastStream never creates one (it
  would with its own defaults); ``shared.kafka.ensure_topics`` creates and checks them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from faststream.kafka.schemas import Topic
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.message import StreamMessage

from shared.events import AuditEvent, DeadLetter, KeyEvent
from shared.kafka_security import KafkaAccess
from shared.topics import AUDIT_EVENTS, KEYS_EVENTS, USAGE_EVENTS, USAGE_EVENTS_DLQ

log = logging.getLogger("tollgate.bus")

# The producer of every broker here: idempotent, acks=all (nothing acknowledged is lost or
# duplicated), a short linger so a burst goes out as one request.
PRODUCER_OPTIONS: dict[str, Any] = {
    "enable_idempotence": True,
    "acks": "all",
    "linger_ms": 5,
    "request_timeout_ms": 10_000,
}
KEYS_RELAY_TITLE = "keys.events.keys-outbox-relay"
AUDIT_RELAY_TITLE = "audit.events.keys-outbox-relay"
KEYS_LAST_USED_TITLE = "usage.events.keys-last-used"
Records = tuple[ConsumerRecord, ...]


def new_broker(kafka: str | KafkaAccess, client_id: str, **options: Any) -> KafkaBroker:
    """A broker with Tollgate's producer settings and the service's Kafka security (a plain
    bootstrap string: plaintext); FastStream's per-message logs at DEBUG.

    The bootstrap setting separates servers by commas: FastStream takes a string as one
    server (aiokafka would split it), so it gets the list."""
    access = KafkaAccess(kafka) if isinstance(kafka, str) else kafka
    security, extra = access.broker_security()
    return KafkaBroker(
        access.servers,
        client_id=client_id,
        logger=log,
        log_level=logging.DEBUG,
        security=security,
        **(PRODUCER_OPTIONS | extra | options),
    )


def keys_events_publisher(broker: KafkaBroker, topic: str = KEYS_EVENTS) -> DefaultPublisher:
    """The key service's outbox relay publishes every committed change of a key."""
    publisher: DefaultPublisher = broker.publisher(
        topic,
        title=KEYS_RELAY_TITLE,
        description="key service (services/keys/outbox.py): the outbox relay publishes every "
        "committed change of a key, in the order written, idempotent producer, acks=all; "
        "each record carries FastStream's content-type and correlation_id headers",
        schema=KeyEvent,
    )
    return publisher


def audit_events_publisher(broker: KafkaBroker, topic: str = AUDIT_EVENTS) -> DefaultPublisher:
    """The key service's outbox relay publishes every committed audit log entry."""
    publisher: DefaultPublisher = broker.publisher(
        topic,
        title=AUDIT_RELAY_TITLE,
        description="key service (services/keys/outbox.py): the outbox relay publishes each "
        "audit log entry, written in the transaction of the change it records, in the order "
        "written, idempotent producer, acks=all; each record carries FastStream's "
        "content-type and correlation_id headers",
        schema=AuditEvent,
    )
    return publisher


def dead_letter_publisher(
    broker: KafkaBroker, group: str, topic: str = USAGE_EVENTS_DLQ, where: str = ""
) -> DefaultPublisher:
    """A usage.events consumer group's dead letters (``shared/exactly_once/dlq.py`` sends them);
    ``where`` names the service, for the document."""
    publisher: DefaultPublisher = broker.publisher(
        topic,
        title=f"usage.events.dlq.{group}",
        description=f"{where or 'group ' + repr(group)}: each usage record that group "
        f"{group!r} cannot parse or apply, with the reason; sent before the batch's offsets "
        "are committed",
        schema=DeadLetter,
    )
    return publisher


async def raw_records(
    records: Records, parse: Callable[[Records], Awaitable[StreamMessage[Any]]]
) -> StreamMessage[Any]:
    """FastStream's batch parser on the records without their headers (module docstring)."""
    return await parse(tuple(dataclasses.replace(r, headers=()) for r in records))


async def raw_body(message: StreamMessage[Any], _decode: object) -> Records:
    """The batch's records as they came: the handler parses (and dead-letters) each value."""
    records: Records = message.raw_message
    return records


def last_used_subscriber(
    broker: KafkaBroker,
    group_id: str,
    max_records: int,
    topic: str = USAGE_EVENTS,
) -> BatchSubscriber:
    """The key service's consumer of usage.events that moves each key's last_used_at.

    Batches, acknowledged (committed) by the handler after the batch's update committed;
    on any error the batch is never acknowledged and the consumer starts over from the
    committed offsets (``AckPolicy.MANUAL``: FastStream neither commits nor seeks itself).
    """
    subscriber: BatchSubscriber = broker.subscriber(
        Topic(topic, declare=False),
        group_id=group_id,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=1000,
        auto_offset_reset="earliest",
        # Bound how long a join (and so a stop during one) can wait for the group.
        rebalance_timeout_ms=10_000,
        session_timeout_ms=10_000,
        ack_policy=AckPolicy.MANUAL,
        parser=raw_records,
        decoder=raw_body,
        title=KEYS_LAST_USED_TITLE,
        description="key service (services/keys/last_used.py): each key's last_used_at; "
        "offsets committed after the batch's update committed",
    )
    return subscriber
