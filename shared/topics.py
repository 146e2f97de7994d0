"""Topic names and their configurations: the only place topic names are spelled."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

KEYS_EVENTS = "keys.events"
USAGE_EVENTS = "usage.events"
USAGE_EVENTS_DLQ = "usage.events.dlq"
AUDIT_EVENTS = "audit.events"

DAY_MS = 24 * 60 * 60 * 1000
USAGE_RETENTION_MS = 7 * DAY_MS
AUDIT_RETENTION_MS = 90 * DAY_MS
# usage.events' partitions by default: at most this many replicas of each ledger share its work
# (TOLLGATE_<SERVICE>_USAGE_PARTITIONS changes it; a topic with fewer is grown to it).
USAGE_PARTITIONS = 6


@dataclass(frozen=True)
class TopicSpec:
    """A topic as Tollgate creates it."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    # More partitions may be added to it when it exists with fewer (usage.events: each event
    # stands alone, deduplicated by id and summed, so a key moving partition changes nothing).
    growable: bool = False

    def with_prefix(self, prefix: str) -> TopicSpec:
        return TopicSpec(prefix + self.name, self.partitions, dict(self.configs), self.growable)


TOPICS: tuple[TopicSpec, ...] = (
    # Compacted: the latest state of every key survives forever, so a gateway can rebuild its
    # cache from offset 0. Revoked keys stay as "revoked" records, never as tombstones.
    TopicSpec(
        KEYS_EVENTS,
        partitions=3,
        configs={
            "cleanup.policy": "compact",
            "min.cleanable.dirty.ratio": "0.1",
            "segment.ms": str(60 * 60 * 1000),
        },
    ),
    TopicSpec(
        USAGE_EVENTS,
        partitions=USAGE_PARTITIONS,
        configs={"cleanup.policy": "delete", "retention.ms": str(USAGE_RETENTION_MS)},
        growable=True,
    ),
    TopicSpec(
        USAGE_EVENTS_DLQ,
        partitions=1,
        configs={"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
    ),
    # The key service's audit log as a stream, keyed by project (or "organization"); the
    # record of truth is its PostgreSQL table, so the topic keeps a window, not everything.
    TopicSpec(
        AUDIT_EVENTS,
        partitions=3,
        configs={"cleanup.policy": "delete", "retention.ms": str(AUDIT_RETENTION_MS)},
    ),
)


def with_usage_partitions(
    partitions: int, specs: tuple[TopicSpec, ...] = TOPICS
) -> tuple[TopicSpec, ...]:
    """The topics, usage.events with ``partitions`` partitions."""
    return tuple(
        replace(spec, partitions=partitions) if spec.name == USAGE_EVENTS else spec
        for spec in specs
    )


def topic_name(name: str, prefix: str = "") -> str:
    """A topic's name as deployed (tests isolate themselves with a prefix)."""
    return prefix + name
