"""Kafka plumbing: topic creation with configs, and the one producer configuration we use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidReplicationFactorError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

from shared.kafka_security import KafkaAccess, kafka_options
from shared.topics import TOPICS, TopicSpec

log = logging.getLogger(__name__)


class TopicMismatch(RuntimeError):
    """A topic exists with other settings than Tollgate's: reported, never silently used."""


@dataclass(frozen=True)
class Replication:
    """How topics are replicated: 1 and 1 on a single node; 3 and 2 on a cluster."""

    factor: int = 1
    min_insync: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min_insync <= self.factor:
            raise ValueError("min.insync.replicas must be from 1 to the replication factor")


# What an existing topic must match (others, such as segment.ms, an operator may tune).
_CHECKED_CONFIGS = ("cleanup.policy", "min.insync.replicas")


async def ensure_topics(
    bootstrap: str | KafkaAccess,
    specs: Iterable[TopicSpec] = TOPICS,
    prefix: str = "",
    timeout: float = 30.0,
    *,
    replication: Replication = Replication(),
    checked: Iterable[str] | None = None,
) -> None:
    """Create each topic that does not exist yet, with its partitions, replication and
    configs; check each that exists among ``checked`` (names without the prefix: the topics
    the caller uses; all by default): other partitions, replication factor, cleanup policy or
    ``min.insync.replicas`` raise TopicMismatch, naming every difference."""
    wanted = [spec.with_prefix(prefix) for spec in specs]
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap), request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in wanted if s.name not in existing]
        if missing:
            new = [
                NewTopic(
                    s.name,
                    s.partitions,
                    replication.factor,
                    topic_configs={
                        **s.configs,
                        "min.insync.replicas": str(replication.min_insync),
                    },
                )
                for s in missing
            ]
            names = None if checked is None else {prefix + name for name in checked}
            # Another replica may create a topic between our list and our create, and a topic
            # made a moment ago may not be listed yet: either way it exists, and is checked.
            try:
                answer = await admin.create_topics(new)
            except TopicAlreadyExistsError:
                existing |= {s.name for s in missing}  # described below, as listed ones are
            else:
                _raise_refusals(answer, replication, names)
                existing |= {
                    topic
                    for topic, code, *_ in getattr(answer, "topic_errors", ())
                    if code == TopicAlreadyExistsError.errno
                }
            log.info("created topics", extra={"topics": [s.name for s in missing]})
        names = None if checked is None else {prefix + name for name in checked}
        present = [s for s in wanted if s.name in existing and (names is None or s.name in names)]
        if present:
            await _grow(admin, [s for s in present if s.growable])
            await _check(admin, present, replication)
    finally:
        await admin.close()


# Refusals for want of a Kafka ACL (topic, cluster): under least privilege a service may not
# create topics at all (README.md: "Secure transport"); an administrator made them.
_NOT_ALLOWED = (TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno)


def _raise_refusals(answer: object, replication: Replication, ours: set[str] | None = None) -> None:
    """The broker answers each topic's creation apart: refusals come back as error codes. A
    topic the caller does not use (not in ``ours``) that its ACLs forbid it to create is left
    to its users (one cannot see a topic one may not describe)."""
    refused = []
    for topic, code, *rest in getattr(answer, "topic_errors", ()):
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        if code in _NOT_ALLOWED and ours is not None and topic not in ours:
            continue
        if code in _NOT_ALLOWED:
            refused.append(
                f"{topic}: this Kafka user may not create it (a missing ACL): create it as an "
                "administrator, or grant Create"
            )
            continue
        if code == InvalidReplicationFactorError.errno:
            raise TopicMismatch(
                f"cannot create topics with replication factor {replication.factor}: the "
                "cluster has fewer brokers (set TOPIC_REPLICATION_FACTOR to at most its "
                "number of brokers)"
            )
        refused.append(f"{topic}: error {code} {rest[0] if rest else ''}".strip())
    if refused:
        raise KafkaError("topics not created: " + "; ".join(refused))


async def _grow(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Add partitions to each growable topic that has fewer than its spec wants (partitions
    are never removed: a topic with more keeps them)."""
    if not specs:
        return
    described = {t["topic"]: t for t in await admin.describe_topics([s.name for s in specs])}
    grow = {
        s.name: NewPartitions(total_count=s.partitions)
        for s in specs
        if 0 < len(described.get(s.name, {}).get("partitions", [])) < s.partitions
    }
    if grow:
        answer = await admin.create_partitions(grow)
        # INVALID_PARTITIONS (37): another replica grew it first; anything else is logged.
        errors = [e for e in getattr(answer, "topic_errors", ()) if e[1] not in (0, 37)]
        if errors:
            log.warning("could not add partitions", extra={"errors": [list(e) for e in errors]})
        else:
            counts = {name: p.total_count for name, p in grow.items()}
            log.info("added partitions", extra={"topics": counts})


async def _check(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], replication: Replication
) -> None:
    described = {t["topic"]: t for t in await admin.describe_topics([s.name for s in specs])}
    answers = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    )
    configs: dict[str, dict[str, str]] = {}
    for answer in answers:
        for resource in answer.resources:
            configs[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
    problems = []
    for spec in specs:
        partitions = described.get(spec.name, {}).get("partitions", [])
        if not partitions:
            continue  # created a moment ago by another replica: not in the metadata yet
        # A growable topic was grown above (its metadata may lag), and may have more.
        if len(partitions) != spec.partitions and not spec.growable:
            problems.append(f"{spec.name}: {len(partitions)} partitions, not {spec.partitions}")
        factors = {len(p["replicas"]) for p in partitions}
        if factors and factors != {replication.factor}:
            found = ", ".join(str(f) for f in sorted(factors))
            problems.append(f"{spec.name}: replication factor {found}, not {replication.factor}")
        want = {**spec.configs, "min.insync.replicas": str(replication.min_insync)}
        held = configs.get(spec.name, {})
        problems += [
            f"{spec.name}: {name}={held.get(name)}, not {want[name]}"
            for name in _CHECKED_CONFIGS
            if held and name in want and held.get(name) != want[name]
        ]
    if problems:
        raise TopicMismatch(
            "topics exist with other settings than Tollgate's (change them or the settings; "
            "they are not used as they are): " + "; ".join(problems)
        )


async def topic_partitions(
    bootstrap: str | KafkaAccess, topic: str, timeout: float = 10.0
) -> list[int]:
    """The topic's partition ids, from the cluster's metadata; KafkaError while it has none
    (it does not exist, or was created a moment ago and its partitions are not known yet)."""
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap), request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), timeout)
    try:
        described = await asyncio.wait_for(admin.describe_topics([topic]), timeout)
    finally:
        await admin.close()
    partitions = sorted(
        p["partition"] for t in described if t["topic"] == topic for p in t["partitions"]
    )
    if not partitions:
        raise KafkaError(f"topic {topic} has no partitions yet")
    return partitions


def idempotent_producer(
    bootstrap: str | KafkaAccess, client_id: str, **overrides: object
) -> AIOKafkaProducer:
    """A producer that neither loses nor duplicates what the broker acknowledged."""
    options: dict[str, object] = {
        **kafka_options(bootstrap),
        "client_id": client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "request_timeout_ms": 10_000,
        "compression_type": None,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def broker_reachable(bootstrap: str | KafkaAccess, timeout: float = 3.0) -> bool:
    """True when the cluster answers a metadata request within timeout."""
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True
