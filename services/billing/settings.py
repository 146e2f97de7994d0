"""Billing's settings: ``TOLLGATE_BILLING_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.ledger import LedgerServiceSettings
from shared.settings import require_real_secret

REPO = Path(__file__).resolve().parents[2]


class BillingSettings(LedgerServiceSettings):
    """What the billing service reads from its environment."""

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

    @field_validator("internal_token")
    @classmethod
    def _internal_token_is_real(cls, value: SecretStr) -> SecretStr:
        return require_real_secret(value, "INTERNAL_TOKEN")

    @model_validator(mode="after")
    def _tokens_differ(self) -> BillingSettings:
        # The gateways hold the internal token: it must never open the operator's Costs API.
        if self.internal_token.get_secret_value() == self.admin_token.get_secret_value():
            raise ValueError("INTERNAL_TOKEN and ADMIN_TOKEN must differ")
        return self
