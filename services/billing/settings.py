"""Billing's settings: ``TOLLGATE_BILLING_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.exactly_once import LedgerServiceSettings
from shared.settings import InternalTokenSettings

REPO = Path(__file__).resolve().parents[2]


class BillingSettings(LedgerServiceSettings, InternalTokenSettings):
    """What the billing service reads from its environment (the gateways hold its internal
    token: shared/settings.py checks that it is real and never the operator's)."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_BILLING_", extra="ignore", frozen=True)

    db_schema: str = Field("billing", description="PostgreSQL schema of the cost ledger")
    consumer_group: str = Field("billing", description="Kafka consumer group")
    catalogue_path: Path = Field(
        REPO / "deploy" / "models.yaml", description="the model catalogue with the price book"
    )
    internal_token: SecretStr = Field(
        SecretStr(""),
        description="bearer token of the gateways' spend reads (the one they send the key "
        "service; not the admin one)",
    )
