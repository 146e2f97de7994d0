"""The model catalogue: one YAML file that the gateway routes by and billing prices with.

Each model names its upstream (OpenAI-compatible base URL, the environment variable that
holds the upstream's credential, the upstream's own model name) and its prices in USD per
million tokens, each with the moment it takes effect. Prices are decimals written as
strings in the YAML, never floats.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.events import UNKNOWN_MODEL, ModelName

ModelKind = Literal["chat", "completion", "embedding"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Upstream(_Frozen):
    """Where a model is served, and how to authenticate there."""

    base_url: str = Field(examples=["http://127.0.0.1:8090/v1"])
    api_key_env: str | None = Field(None, description="env var holding the upstream's key")
    model: str | None = Field(None, description="the upstream's name for it; default: the id")
    timeout_s: float = Field(120.0, gt=0)

    def api_key(self) -> str | None:
        """The upstream credential, read from the environment when asked for."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class Price(_Frozen):
    """USD per million tokens from ``effective_from`` on."""

    effective_from: AwareDatetime
    input_per_million: Decimal = Field(ge=0)
    output_per_million: Decimal = Field(ge=0)
    cached_input_per_million: Decimal | None = Field(None, ge=0)

    @field_validator(
        "input_per_million", "output_per_million", "cached_input_per_million", mode="before"
    )
    @classmethod
    def _no_floats(cls, value: object) -> object:
        if isinstance(value, float):
            raise ValueError('write prices as strings ("0.150"), not floats')  # noqa: TRY004
        return value


class ModelEntry(_Frozen):
    """One model the gateway serves."""

    id: ModelName = Field(
        min_length=1,
        description="what clients name it and usage events carry: printable, at most 256 "
        "characters, never the unknown-model marker",
        examples=["Qwen/Qwen2.5-0.5B-Instruct"],
    )
    kind: ModelKind = "chat"
    owned_by: str = "tollgate"
    created: int = 1_767_225_600
    upstream: Upstream
    prices: tuple[Price, ...] = ()
    max_output_tokens: int = Field(
        4096,
        ge=0,
        description="the most output tokens one answer may have: what a budget reserves for a "
        "request that sets no max_tokens (0 for embedding models)",
    )

    @field_validator("id")
    @classmethod
    def _not_the_marker(cls, model_id: str) -> str:
        if model_id == UNKNOWN_MODEL:
            raise ValueError(f"{UNKNOWN_MODEL!r} marks usage of no known model; it cannot be an id")
        return model_id

    @field_validator("prices")
    @classmethod
    def _ordered(cls, prices: tuple[Price, ...]) -> tuple[Price, ...]:
        dates = [p.effective_from for p in prices]
        if len(set(dates)) != len(dates):
            raise ValueError("two prices share an effective_from")
        return tuple(sorted(prices, key=lambda p: p.effective_from))

    def price_at(self, when: datetime) -> Price | None:
        """The price in force at ``when``; None before the first one."""
        current = None
        for price in self.prices:
            if price.effective_from <= when:
                current = price
        return current

    @property
    def upstream_model(self) -> str:
        return self.upstream.model or self.id


class Catalogue(_Frozen):
    """All models, by id."""

    models: tuple[ModelEntry, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalogue:
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError("two models share an id")
        return self

    def get(self, model_id: str) -> ModelEntry | None:
        """The model with that id, or None."""
        return next((m for m in self.models if m.id == model_id), None)


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` with the environment's values."""

    def value(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is not None:
            return found
        if match.group(2) is not None:
            return match.group(2)
        raise ValueError(f"the catalogue refers to ${{{match.group(1)}}}, which is not set")

    return _ENV_REFERENCE.sub(value, text)


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate the catalogue YAML at path (``${VAR:-default}`` expanded)."""
    raw = yaml.safe_load(expand_env(path.read_text()))
    return Catalogue.model_validate(raw)
