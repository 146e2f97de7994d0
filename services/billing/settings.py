"""Billing's settings: ``TOLLGATE_BILLING_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.ledger_settings import LedgerServiceSettings

REPO = Path(__file__).resolve().parents[2]


class BillingSettings(LedgerServiceSettings):
    """What the billing service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_BILLING_", extra="ignore", frozen=True)

    db_schema: str = Field("billing", description="PostgreSQL schema of the cost ledger")
    consumer_group: str = Field("billing", description="Kafka consumer group")
    catalogue_path: Path = Field(
        REPO / "deploy" / "models.yaml", description="the model catalogue with the price book"
    )
