"""Request and response bodies of the management API, in OpenAI's list and object style.

Times in answers are Unix seconds, as in OpenAI's API; ``expires_at`` is accepted as Unix
seconds or as an ISO 8601 time with a timezone. What each field of a request takes (and what
the OpenAPI document says of it) is in ``fields.py``; ``null`` or absent means no limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from services.keys.fields import (
    BUDGET_EXAMPLE,
    RATE_LIMITS_EXAMPLE,
    BudgetIn,
    BudgetInput,
    EndpointsIn,
    Expiry,
    ModelsIn,
    Name,
    RateLimitsIn,
    RateLimitsInput,
    never_null,
    not_null,
    whole,
)
from shared.events import Sha256Hex
from shared.policy import Budget, RateLimits, Scope

KeyStatusView = Literal["active", "expired", "revoked"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateProject(_Request):
    """Body of ``POST /v1/projects``."""

    name: Name


class CreateKey(_Request):
    """Body of ``POST /v1/projects/{project_id}/keys``."""

    name: Name
    expires_at: Expiry | None = Field(
        None,
        description="when the key stops working, in the future: ISO 8601 with a timezone "
        "(or Unix seconds); null: never",
    )
    rate_limits: RateLimitsIn = None
    budget: BudgetIn = None
    allowed_models: ModelsIn = None
    allowed_endpoints: EndpointsIn = None


class UpdateKey(_Request):
    """Body of ``PATCH /v1/projects/{project_id}/keys/{key_id}``.

    A field left out stays as it is; a policy field given as ``null`` removes that limit.
    """

    name: Name | None = Field(None, json_schema_extra=never_null)
    rate_limits: RateLimitsIn = None
    budget: BudgetIn = None
    allowed_models: ModelsIn = None
    allowed_endpoints: EndpointsIn = None

    _name_not_null = field_validator("name", mode="before")(not_null)


class UpdateProject(_Request):
    """Body of ``PATCH /v1/projects/{project_id}``: left out, unchanged; null, no limit."""

    name: Name | None = Field(None, json_schema_extra=never_null)
    rate_limits: Annotated[
        RateLimitsInput | None,
        Field(
            description="requests and tokens per minute for all the project's keys together; "
            "null: none",
            examples=[RATE_LIMITS_EXAMPLE],
        ),
    ] = None
    budget: Annotated[
        BudgetInput | None,
        Field(
            description="spend for all the project's keys together; null: no budget",
            examples=[BUDGET_EXAMPLE],
        ),
    ] = None

    _name_not_null = field_validator("name", mode="before")(not_null)


class RotateKey(_Request):
    """Body of ``POST .../rotate``: how long the old secret keeps working (0: not at all)."""

    grace_period_seconds: StrictInt = Field(
        0,
        ge=0,
        examples=[3600],
        description="at most the service's TOLLGATE_KEYS_MAX_GRACE_S (the document's maximum)",
    )

    _whole_grace = field_validator("grace_period_seconds", mode="before")(whole)


class VerifyRequest(_Request):
    """Body of the gateway's ``POST /internal/v1/keys/verify``."""

    key_hash: Sha256Hex


class Project(BaseModel):
    """A project: it holds API keys."""

    object: Literal["project"] = "project"
    id: str = Field(examples=["proj_8d0a..."])
    name: str
    created_at: int = Field(description="Unix seconds")
    rate_limits: RateLimits | None = Field(
        None,
        description="limits for all the project's keys together, on top of each key's own",
        examples=[RATE_LIMITS_EXAMPLE],
    )
    budget: Budget | None = Field(
        None,
        description="spend budget for all the project's keys together; limit_usd as a "
        "decimal string, in plain notation",
        examples=[BUDGET_EXAMPLE],
    )


class ApiKey(BaseModel):
    """An API key as listed: everything but the secret."""

    object: Literal["project.api_key"] = "project.api_key"
    id: str = Field(examples=["key_4f2k9..."])
    project_id: str
    name: str
    hint: str = Field(examples=["sk-...Ac4A"], description="sk-... and the secret's last 4")
    status: KeyStatusView
    is_default: bool
    created_at: int
    last_used_at: int | None = None
    expires_at: int | None = None
    rotated_at: int | None = None
    previous_key_valid_until: int | None = Field(
        None, description="the old secret works until then, after a rotation with a grace period"
    )
    revoked_at: int | None = None
    rate_limits: RateLimits | None = Field(
        None, description="the key's own rate limits; null: none", examples=[RATE_LIMITS_EXAMPLE]
    )
    budget: Budget | None = Field(
        None,
        description="the key's own spend budget; limit_usd as a decimal string, in plain "
        "notation; null: none",
        examples=[BUDGET_EXAMPLE],
    )
    allowed_models: list[str] | None = Field(
        None,
        description="the models the key may use; null: all",
        examples=[["Qwen/Qwen2.5-0.5B-Instruct"]],
    )
    allowed_endpoints: list[Scope] | None = Field(
        None,
        description="the endpoints the key may call; null: all",
        examples=[["chat.completions", "models"]],
    )


class ApiKeyWithSecret(ApiKey):
    """A key just created or rotated: the secret, shown in this answer only."""

    key: str = Field(description="the full secret; it is not stored and never shown again")


class ProjectList(BaseModel):
    """A page of projects."""

    object: Literal["list"] = "list"
    data: list[Project]
    first_id: str | None
    last_id: str | None
    has_more: bool


class KeyList(BaseModel):
    """A page of API keys."""

    object: Literal["list"] = "list"
    data: list[ApiKey]
    first_id: str | None
    last_id: str | None
    has_more: bool


class KeyDeleted(BaseModel):
    """The answer to a revoke."""

    object: Literal["project.api_key.deleted"] = "project.api_key.deleted"
    id: str
    deleted: bool = True


def unix(moment: datetime | None) -> int | None:
    """Unix seconds of moment, or None."""
    return None if moment is None else int(moment.timestamp())
