"""Tollgate's bus as an AsyncAPI document: every topic, who publishes it, who subscribes.

Where a service runs FastStream, the document declares it with the very functions the service
calls (``shared/bus.py``): the key service's outbox relay publisher and its last_used
subscriber. The rest stays on aiokafka, each for a reason its module's docstring gives (the
gateway's usage publisher ``services/gateway/usage/publisher.py`` and its cache feeder
``services/gateway/keys/feeder.py``; the ledgers' consumer ``shared/exactly_once/consumer.py``
and their dead-letter sender ``shared/exactly_once/dlq.py``), and is declared below for the
document alone, naming the module it stands for. The payloads are the event models of
``shared/events.py`` (``MODELS``: a batch handler's signature would say a list), partitions,
retention and compaction come from ``shared/topics.py`` (the configuration ``ensure_topics``
creates), so the document cannot drift from the code; the consumer groups are the services'
settings defaults, which ``tests/foundation/test_bus_docs.py`` holds them to.

FastStream (0.7.8) leaves out of the document what AsyncAPI's Kafka bindings can say but its
declarations cannot: a topic's partitions and configuration, the message key, the consumer
group. ``document()`` adds them from the same sources (bindings version 0.4.0), and keeps the
topic's whole configuration under ``x-kafka-topic-configs``. ``make docs`` writes the result
to ``docs/asyncapi.json`` and ``docs/events.md`` (``deploy/docs.py``).
"""

from __future__ import annotations

from typing import Any

from faststream import AckPolicy, FastStream, NoCast
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared.bus import (
    AUDIT_RELAY_TITLE,
    KEYS_LAST_USED_TITLE,
    KEYS_RELAY_TITLE,
    Records,
    audit_events_publisher,
    dead_letter_publisher,
    keys_events_publisher,
    last_used_subscriber,
)
from shared.events import AuditEvent, DeadLetter, KeyEvent, UsageRecorded
from shared.exactly_once.dlq import MAX_KEY_BYTES
from shared.ids import KEY_ID_CHARS, PROJECT_ID_CHARS
from shared.settings import ServiceSettings
from shared.topics import AUDIT_EVENTS, KEYS_EVENTS, TOPICS, USAGE_EVENTS, USAGE_EVENTS_DLQ

TITLE = "Tollgate bus"
VERSION = "1"
DESCRIPTION = (
    "Kafka topics between Tollgate's services, and for internal teams that subscribe to them. "
    "Every value is UTF-8 JSON of one pydantic model of shared/events.py. Consumers must be "
    "idempotent: delivery is at least once (dedupe by event_id; on keys.events, ignore a "
    "version older than the one you hold). In a deployment every name may carry a prefix "
    "(TOLLGATE_TOPIC_PREFIX)."
)
BINDING_VERSION = "0.4.0"
# The consumer groups of the services' settings (TOLLGATE_<SERVICE>_CONSUMER_GROUP defaults),
# by the title of the subscriber that stands for each.
METERING_GROUP = "metering"
BILLING_GROUP = "billing"
KEYS_LAST_USED_GROUP = "keys-last-used"
GROUPS = {
    "usage.events.metering": METERING_GROUP,
    "usage.events.billing": BILLING_GROUP,
    KEYS_LAST_USED_TITLE: KEYS_LAST_USED_GROUP,
}
# Each topic's payload, whatever a handler's signature says (a batch handler's is a list).
MODELS = {
    KEYS_EVENTS: KeyEvent,
    USAGE_EVENTS: UsageRecorded,
    USAGE_EVENTS_DLQ: DeadLetter,
    AUDIT_EVENTS: AuditEvent,
}
# Channels whose records FastStream publishes, with its correlation_id header.
FASTSTREAM_PUBLISHED = {KEYS_RELAY_TITLE, AUDIT_RELAY_TITLE}

_KEY_ID = {"type": "string", "pattern": f"^{KEY_ID_CHARS}$", "description": "the key id"}
# What each topic's messages carry as their Kafka key.
MESSAGE_KEYS: dict[str, dict[str, Any]] = {
    KEYS_EVENTS: _KEY_ID
    | {
        "description": "the key id (the payload's key_id); compaction keeps each key's latest state"
    },
    USAGE_EVENTS: _KEY_ID
    | {
        "description": "the key id (the payload's key_id): one key's "
        "records stay in order on one partition"
    },
    USAGE_EVENTS_DLQ: {
        "type": ["string", "null"],
        "description": f"the source record's key when it had one of at most {MAX_KEY_BYTES} "
        "bytes (the key id), else none",
    },
    AUDIT_EVENTS: {
        "type": "string",
        "pattern": f"^(organization|{PROJECT_ID_CHARS})$",
        "description": "the entry's project_id, or 'organization' for a change outside any one "
        "project (an admin key's): one project's entries stay in order on one partition",
    },
}
# The Kafka bindings' topicConfiguration names these; the rest stay in x-kafka-topic-configs.
_BOUND_CONFIGS = ("retention.ms", "retention.bytes", "delete.retention.ms", "max.message.bytes")

broker = KafkaBroker(
    ServiceSettings.model_fields["kafka_bootstrap"].default,
    description="the local stack's broker (make up); set TOLLGATE_KAFKA_BOOTSTRAP elsewhere",
)

# keys.events: one publisher, the key service's outbox relay (the declaration that runs).
keys_events_publisher(broker)


@broker.subscriber(
    KEYS_EVENTS,
    group_id=None,
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.MANUAL,
    title="keys.events.gateway-feeder",
    description="gateway (services/gateway/keys/feeder.py): every replica reads every partition "
    "without a consumer group, from the start when Redis holds no saved positions, into its "
    "cache and Redis",
)
async def gateway_feeder(event: KeyEvent) -> None:
    """Declaration only: the gateway's feeder is aiokafka (services/gateway/keys/feeder.py)."""


# audit.events: one publisher, the key service's outbox relay (the declaration that runs).
audit_events_publisher(broker)

# usage.events: one publisher, the gateway; three consumer groups.
broker.publisher(
    USAGE_EVENTS,
    title="usage.events.gateway",
    description="gateway (services/gateway/usage/emitter.py, publisher.py): one record per "
    "authenticated request after its response ended; spooled to disk while Kafka is away",
    schema=UsageRecorded,
)


@broker.subscriber(
    USAGE_EVENTS,
    group_id=GROUPS["usage.events.metering"],
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.MANUAL,
    title="usage.events.metering",
    description="metering (shared/exactly_once/consumer.py): usage ledgers, exactly once; offsets "
    "kept in PostgreSQL in the ledger's own transaction",
)
async def metering(event: UsageRecorded) -> None:
    """Declaration only: metering's consumer is aiokafka (shared/exactly_once/consumer.py)."""


@broker.subscriber(
    USAGE_EVENTS,
    group_id=GROUPS["usage.events.billing"],
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.MANUAL,
    title="usage.events.billing",
    description="billing (shared/exactly_once/consumer.py): cost ledgers priced with the price "
    "book, exactly once; offsets kept in PostgreSQL in the ledger's own transaction",
)
async def billing(event: UsageRecorded) -> None:
    """Declaration only: billing's consumer is aiokafka (shared/exactly_once/consumer.py)."""


# The key service's subscriber, as it runs (its handler is services/keys/last_used.py's).
@last_used_subscriber(broker, KEYS_LAST_USED_GROUP, max_records=1)
async def keys_last_used(batch: NoCast[Records]) -> None:
    """Declaration only: the key service registers its own handler on the same subscriber."""


# usage.events.dlq: each usage.events consumer dead-letters what it cannot parse or apply.
for _group, _where in (
    (METERING_GROUP, "metering (shared/exactly_once/dlq.py)"),
    (BILLING_GROUP, "billing (shared/exactly_once/dlq.py)"),
    (KEYS_LAST_USED_GROUP, "key service (services/keys/last_used.py, shared/exactly_once/dlq.py)"),
):
    dead_letter_publisher(broker, _group, where=_where)

app = FastStream(
    broker,
    specification=AsyncAPI(
        broker, title=TITLE, version=VERSION, description=DESCRIPTION, schema_version="3.0.0"
    ),
)


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document, with what FastStream leaves out added from the code."""
    doc: dict[str, Any] = app.schema.to_specification().to_jsonable()
    specs = {spec.name: spec for spec in TOPICS}
    for channel in doc["channels"].values():
        spec = specs[channel["address"]]
        policy = spec.configs.get("cleanup.policy", "delete")
        topic_config: dict[str, Any] = {"cleanup.policy": policy.split(",")}
        topic_config |= {k: int(v) for k, v in spec.configs.items() if k in _BOUND_CONFIGS}
        channel["bindings"]["kafka"] |= {
            "partitions": spec.partitions,
            "topicConfiguration": topic_config,
        }
        channel["x-kafka-topic-configs"] = dict(spec.configs)
        for ref in channel["messages"].values():
            message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
            message["payload"] = {"$ref": f"#/components/schemas/{MODELS[spec.name].__name__}"}
            if message["title"].split(":")[0] not in FASTSTREAM_PUBLISHED:
                # FastStream's default; the aiokafka producers send no correlation_id header.
                message.pop("correlationId", None)
            message["bindings"] = {
                "kafka": {"key": MESSAGE_KEYS[spec.name], "bindingVersion": BINDING_VERSION}
            }
    for name, operation in doc["operations"].items():
        group = GROUPS.get(name)
        if operation["action"] == "receive" and group is not None:
            operation["bindings"] = {
                "kafka": {
                    "groupId": {"type": "string", "enum": [group]},
                    "bindingVersion": BINDING_VERSION,
                }
            }
    used = {model.__name__ for model in MODELS.values()}
    schemas = doc["components"]["schemas"]
    for name in [n for n in schemas if n.endswith(":Payload") or n == "EmptyPayload"]:
        if name not in used:
            del schemas[name]
    return _sorted(doc)


def _sorted(doc: dict[str, Any]) -> dict[str, Any]:
    """Channels, operations and components by name: FastStream orders them by hash (a set)."""
    for section in (doc, doc["components"]):
        for name in ("channels", "operations", "messages", "schemas"):
            if name in section:
                section[name] = dict(sorted(section[name].items()))
    return doc
