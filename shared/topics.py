"""Topic names and their configurations: the only place topic names are spelled."""

from __future__ import annotations

from dataclasses import dataclass, field

KEYS_EVENTS = "keys.events"
USAGE_EVENTS = "usage.events"
USAGE_EVENTS_DLQ = "usage.events.dlq"
AUDIT_EVENTS = "audit.events"

DAY_MS = 24 * 60 * 60 * 1000
USAGE_RETENTION_MS = 7 * DAY_MS
AUDIT_RETENTION_MS = 90 * DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    """A topic as Tollgate creates it."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)

    def with_prefix(self, prefix: str) -> TopicSpec:
        return TopicSpec(prefix + self.name, self.partitions, dict(self.configs))


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
        partitions=6,
        configs={"cleanup.policy": "delete", "retention.ms": str(USAGE_RETENTION_MS)},
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


def topic_name(name: str, prefix: str = "") -> str:
    """A topic's name as deployed (tests isolate themselves with a prefix)."""
    return prefix + name
