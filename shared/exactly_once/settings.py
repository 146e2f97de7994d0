"""Settings every ledger consumer service shares (metering, billing), and its consumer config."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from shared.exactly_once.consumer import ConsumerConfig
from shared.settings import InternalTokenSettings
from shared.topics import USAGE_EVENTS, USAGE_EVENTS_DLQ, USAGE_RETENTION_MS, topic_name

RETENTION_S = USAGE_RETENTION_MS // 1000


class LedgerServiceSettings(InternalTokenSettings):
    """A service that consumes ``usage.events`` into ledgers and serves them over HTTP, to the
    operator token and to admin keys, whose states it follows from the key service (with the
    internal token: ``shared/admin_key_follower.py``)."""

    keys_url: str = Field(
        "http://127.0.0.1:8081", description="key service base URL: admin key states come from it"
    )
    admin_key_stale_s: float = Field(
        1.0,
        gt=0,
        le=10,
        description="admin keys are refused (503) when the key service was silent this long",
    )

    db_schema: str = Field(description="PostgreSQL schema of the ledgers")
    consumer_group: str = Field(description="Kafka consumer group; replicas share it")
    consume: bool = Field(True, description="run the consumer in this process")
    max_batch: int = Field(5000, ge=1, le=100_000, description="records per transaction, at most")
    session_timeout_ms: int = Field(10_000, ge=6_000, description="Kafka group session timeout")
    future_tolerance_s: int = Field(300, ge=0, description="events further ahead go to the DLQ")
    dedupe_window_s: int = Field(
        RETENTION_S + 86_400,
        description="how long event ids are remembered; at least usage.events' retention",
    )
    dedupe_cleanup_interval_s: float = Field(600.0, gt=0)
    db_pool_size: int = Field(5, ge=2, le=50)
    stall_after_s: float = Field(
        60.0, gt=0, description="no batch committed this long while lag > 0: /readyz says 503"
    )
    lag_interval_s: float = Field(
        5.0, gt=0, description="how often the consumer asks the broker for end offsets (lag)"
    )
    max_dead_letter_bytes: int = Field(
        900_000,
        ge=4096,
        le=1_000_000,
        description="largest dead letter (JSON); a larger record's value is stored truncated",
    )

    @field_validator("dedupe_window_s")
    @classmethod
    def _covers_retention(cls, value: int) -> int:
        # A replay can bring back any event still in the topic: forget none of those ids.
        if value < RETENTION_S:
            raise ValueError(f"dedupe_window_s must be at least the retention ({RETENTION_S} s)")
        return value

    def consumer_config(self, client_id: str) -> ConsumerConfig:
        """The consumer's configuration, topics prefixed as the settings say."""
        return ConsumerConfig(
            bootstrap=self.kafka,
            topic=topic_name(USAGE_EVENTS, self.topic_prefix),
            dlq_topic=topic_name(USAGE_EVENTS_DLQ, self.topic_prefix),
            group_id=self.consumer_group,
            client_id=client_id,
            max_batch=self.max_batch,
            session_timeout_ms=self.session_timeout_ms,
            future_tolerance=timedelta(seconds=self.future_tolerance_s),
            dedupe_window=timedelta(seconds=self.dedupe_window_s),
            cleanup_interval_s=self.dedupe_cleanup_interval_s,
            stall_after_s=self.stall_after_s,
            lag_interval_s=self.lag_interval_s,
            max_dead_letter_bytes=self.max_dead_letter_bytes,
        )
