"""Metering's settings: ``TOLLGATE_METERING_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.exactly_once import LedgerServiceSettings


class MeteringSettings(LedgerServiceSettings):
    """What the metering service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_METERING_", extra="ignore", frozen=True)

    db_schema: str = Field("metering", description="PostgreSQL schema of the usage ledger")
    consumer_group: str = Field("metering", description="Kafka consumer group")
    minute_retention_days: int = Field(
        35,
        ge=1,
        le=3660,
        description="minute rows are kept this many days (dropped a day at a time); hour and "
        "day rows for ever",
    )
