"""Settings base: every service reads its own ``TOLLGATE_<SERVICE>_`` variables.

Settings are built in each service's app factory (never at import), so tests can pass their
own. Secrets are ``SecretStr`` and placeholder values are refused at start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka import Replication
from shared.kafka_security import KafkaAccess, SaslMechanism, SecurityProtocol
from shared.redis_client import RedisAuth
from shared.topics import USAGE_PARTITIONS, TopicSpec, with_usage_partitions

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "admin"})


class ServiceSettings(BaseSettings):
    """What every Tollgate service needs; subclasses set ``env_prefix`` and add their own."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers")
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS) or SASL_SSL (TLS and SASL)"
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (with SASL_SSL)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_sasl_oauth_token_provider: str | None = Field(
        None, description="OAUTHBEARER: module:callable returning an aiokafka token provider"
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA certificates (PEM) the brokers' certificates are checked against"
    )
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="client key (mutual TLS)")
    database_url: SecretStr = Field(
        SecretStr("postgresql://tollgate@127.0.0.1:15432/tollgate"),
        description="PostgreSQL DSN",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:16379/0", description="Redis URL (with redis_cluster: any node's)"
    )
    redis_cluster: bool = Field(False, description="Redis is a Redis Cluster")
    redis_ssl_ca_certs: Path | None = Field(
        None, description="CA certificates (PEM) Redis's certificate is checked against"
    )
    redis_ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    redis_ssl_keyfile: Path | None = Field(None, description="client key (mutual TLS)")
    redis_username: str | None = Field(None, description="Redis ACL user (wins over the URL's)")
    redis_password: SecretStr | None = Field(None, description="Redis ACL user's password")
    topic_prefix: str = Field("", description="prefix on every topic name (tests isolate by it)")
    topic_replication_factor: int = Field(
        1, ge=1, description="replicas of each topic Tollgate creates (3 on a cluster)"
    )
    topic_min_insync_replicas: int = Field(
        1, ge=1, description="min.insync.replicas of each topic (2 on a cluster)"
    )
    usage_partitions: int = Field(
        USAGE_PARTITIONS,
        ge=1,
        le=1024,
        description="partitions of usage.events: at most this many replicas of each ledger "
        "share its work; an existing topic with fewer is grown to it, never shrunk",
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

    @model_validator(mode="after")
    def _kafka_access_is_usable(self) -> ServiceSettings:
        self.kafka  # noqa: B018 - raises KafkaSettingsError naming the setting
        self.redis_auth.check(self.redis_url)
        return self

    @property
    def redis_auth(self) -> RedisAuth:
        """TLS files and ACL credentials of this service's Redis clients."""
        return RedisAuth(
            ca_certs=self.redis_ssl_ca_certs,
            certfile=self.redis_ssl_certfile,
            keyfile=self.redis_ssl_keyfile,
            username=self.redis_username,
            password=self.redis_password,
        )

    @property
    def kafka(self) -> KafkaAccess:
        """How this service's Kafka clients connect (shared/kafka_security.py)."""
        return KafkaAccess(
            bootstrap=self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            oauth_token_provider=self.kafka_sasl_oauth_token_provider,
        )

    @property
    def topics(self) -> tuple[TopicSpec, ...]:
        """The topics as this deployment wants them (usage.events' partitions set here)."""
        return with_usage_partitions(self.usage_partitions)

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
