"""Settings base: every service reads its own ``TOLLGATE_<SERVICE>_`` variables.

Settings are built in each service's app factory (never at import), so tests can pass their
own. Secrets are ``SecretStr`` and placeholder values are refused at start.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka import Replication

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "admin"})


class ServiceSettings(BaseSettings):
    """What every Tollgate service needs; subclasses set ``env_prefix`` and add their own."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers")
    database_url: SecretStr = Field(
        SecretStr("postgresql://tollgate@127.0.0.1:15432/tollgate"),
        description="PostgreSQL DSN",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:16379/0", description="Redis URL (with redis_cluster: any node's)"
    )
    redis_cluster: bool = Field(False, description="Redis is a Redis Cluster")
    topic_prefix: str = Field("", description="prefix on every topic name (tests isolate by it)")
    topic_replication_factor: int = Field(
        1, ge=1, description="replicas of each topic Tollgate creates (3 on a cluster)"
    )
    topic_min_insync_replicas: int = Field(
        1, ge=1, description="min.insync.replicas of each topic (2 on a cluster)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="where traces and metrics go; off by default"
    )
    otel_endpoint: str = Field("http://127.0.0.1:4318", description="OTLP/HTTP collector")

    @model_validator(mode="after")
    def _replication_is_possible(self) -> ServiceSettings:
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError("TOPIC_MIN_INSYNC_REPLICAS must be at most TOPIC_REPLICATION_FACTOR")
        return self

    @property
    def replication(self) -> Replication:
        """How the topics Tollgate creates are replicated, and checked when they exist."""
        return Replication(self.topic_replication_factor, self.topic_min_insync_replicas)


def require_real_secret(value: SecretStr, name: str) -> SecretStr:
    """Refuse a missing or placeholder secret, with the setting's name in the error."""
    raw = value.get_secret_value()
    if raw.strip().lower() in PLACEHOLDER_SECRETS or len(raw) < 16:
        raise ValueError(f"{name} must be set to a real secret of at least 16 characters")
    return value


class TokenGuardedSettings(ServiceSettings):
    """A service whose HTTP API is guarded by the operator token."""

    admin_token: SecretStr = Field(SecretStr(""), description="operator token (Bearer)")

    @field_validator("admin_token")
    @classmethod
    def _admin_token_is_real(cls, value: SecretStr) -> SecretStr:
        return require_real_secret(value, "ADMIN_TOKEN")


class InternalTokenSettings(TokenGuardedSettings):
    """A service the gateways call too, with a token of their own (``INTERNAL_TOKEN``): it must
    be real and differ from the operator's, so that no one token opens both the operator's API
    and the gateways' endpoints. A service redeclares ``internal_token`` to say what it opens."""

    internal_token: SecretStr = Field(
        SecretStr(""), description="bearer token of the gateways' calls (not the admin one)"
    )

    @field_validator("internal_token")
    @classmethod
    def _internal_token_is_real(cls, value: SecretStr) -> SecretStr:
        return require_real_secret(value, "INTERNAL_TOKEN")

    @model_validator(mode="after")
    def _tokens_differ(self) -> Self:
        if self.internal_token.get_secret_value() == self.admin_token.get_secret_value():
            raise ValueError("INTERNAL_TOKEN and ADMIN_TOKEN must differ")
        return self
