"""The key service's settings: ``TOLLGATE_KEYS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import InternalTokenSettings
from shared.state_mac import KeyringSettings
from shared.topics import AUDIT_EVENTS, KEYS_EVENTS, USAGE_EVENTS, USAGE_EVENTS_DLQ, topic_name

MAX_GRACE_S = 30 * 24 * 3600
_REPO = Path(__file__).resolve().parents[2]


class KeysSettings(InternalTokenSettings, KeyringSettings):
    """What the key service reads from its environment (its internal token opens verify only:
    shared/settings.py checks that it is real and not the operator's)."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_KEYS_", extra="ignore", frozen=True)

    internal_token: SecretStr = Field(
        SecretStr(""), description="bearer token of the gateway's verify calls (not the admin one)"
    )
    db_schema: str = Field("keys", description="PostgreSQL schema of projects, keys and outbox")
    db_pool_size: int = Field(10, ge=2, le=100)
    relay: bool = Field(True, description="run the outbox relay in this process")
    relay_batch: int = Field(500, ge=1, le=10_000, description="outbox rows per publish, at most")
    relay_poll_s: float = Field(
        1.0, gt=0, description="outbox poll interval when no NOTIFY wakes the relay"
    )
    consume_usage: bool = Field(True, description="keep last_used_at from usage.events")
    consumer_group: str = Field("keys-last-used", description="consumer group on usage.events")
    last_used_batch: int = Field(2000, ge=1, le=100_000, description="usage records per update")
    max_grace_s: int = Field(MAX_GRACE_S, ge=0, description="longest rotation grace period")
    catalogue_path: Path = Field(
        _REPO / "deploy" / "models.yaml",
        description="model catalogue (the gateway's): allowed_models must name its ids",
    )
    redis_write: bool = Field(
        True, description="also write each committed key state straight to the gateways' Redis"
    )
    redis_prefix: str = Field(
        "tollgate:gw:", description="the gateways' Redis prefix (TOLLGATE_GATEWAY_REDIS_PREFIX)"
    )
    redis_timeout_s: float = Field(
        0.5, gt=0, description="the direct Redis write's bound; past it the outbox carries it"
    )

    state_mac_keys: SecretStr = Field(
        SecretStr(""),
        description="keyring the key service signs every key state with (shared/state_mac.py):"
        " id:secret entries separated by commas, the first signs; the gateways'"
        " TOLLGATE_GATEWAY_STATE_MAC_KEYS must hold that entry",
    )
    resign_batch: int = Field(
        1000, ge=1, le=100_000, description="keys per transaction when states are re-signed"
    )

    admin_key_cache_ttl_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="longest an admin key's state is trusted from this replica's cache; a "
        "change's NOTIFY drops it at once, this bounds a lost notification",
    )
    audit_months_ahead: int = Field(
        3, ge=1, le=24, description="audit log month partitions made ahead of the current one"
    )
    audit_retention_months: int = Field(
        0,
        ge=0,
        description="audit log months kept before the current one (older partitions are "
        "dropped); 0 keeps everything",
    )

    @property
    def keys_topic(self) -> str:
        return topic_name(KEYS_EVENTS, self.topic_prefix)

    @property
    def audit_topic(self) -> str:
        return topic_name(AUDIT_EVENTS, self.topic_prefix)

    @property
    def admin_channel(self) -> str:
        """The NOTIFY channel of admin key changes: every replica's cache listens on it."""
        return f"{self.db_schema}_admin_keys"

    @property
    def usage_topic(self) -> str:
        return topic_name(USAGE_EVENTS, self.topic_prefix)

    @property
    def dlq_topic(self) -> str:
        """Where the last_used consumer puts the usage records it cannot apply."""
        return topic_name(USAGE_EVENTS_DLQ, self.topic_prefix)

    @property
    def notify_channel(self) -> str:
        """The NOTIFY channel that wakes the relay; one per schema, so tests stay apart."""
        return f"{self.db_schema}_outbox"
