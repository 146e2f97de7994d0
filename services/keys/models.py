"""Request and response bodies of the management API, in OpenAI's list and object style.

Times in answers are Unix seconds, as in OpenAI's API; ``expires_at`` is accepted as Unix
seconds or as an ISO 8601 time with a timezone. Policies (README.md: "Key policies") use the
shared types of ``shared/policy.py``, their integers strict here (``true`` or ``"600"`` is not
a rate); ``null`` or absent means no limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
)

from shared.events import KEY_NAME_MAX, Sha256Hex, free_text
from shared.policy import AllowedEndpoints, AllowedModels, Budget, RateLimits, Scope

# The key events' own bounds, so that every name the API takes is one an event can carry.
NAME_MAX = KEY_NAME_MAX

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    AfterValidator(free_text),
    Field(examples=["production-app"], description="1 to 64 characters, trimmed"),
]
KeyStatusView = Literal["active", "expired", "revoked"]


class RateLimitsInput(RateLimits):
    """Requests and tokens per minute, as a request gives them (whole numbers, at least 1)."""

    model_config = ConfigDict(strict=True)


def _distinct(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if values is not None and len(set(values)) != len(values):
        repeated = next(v for i, v in enumerate(values) if v in values[:i])
        raise ValueError(f"'{repeated[:64]}' is listed twice")
    return values


_RATE_LIMITS_EXAMPLE = {"requests_per_minute": 600, "tokens_per_minute": 100_000}
_BUDGET_EXAMPLE = {"limit_usd": "25.00", "period": "month"}
RateLimitsIn = Annotated[
    RateLimitsInput | None,
    Field(
        description="requests and tokens per minute for this key; either may be left out; "
        "null: no rate limit",
        examples=[_RATE_LIMITS_EXAMPLE],
    ),
]
BudgetIn = Annotated[
    Budget | None,
    Field(
        description="spend in USD per UTC day, UTC calendar month, or in total; "
        'limit_usd a decimal string such as "25.00"; null: no budget',
        examples=[_BUDGET_EXAMPLE],
    ),
]
ModelsIn = Annotated[
    AllowedModels | None,
    AfterValidator(_distinct),
    Field(
        description="catalogue ids of the models the key may use, each once; null: all models",
        examples=[["Qwen/Qwen2.5-0.5B-Instruct"]],
    ),
]
EndpointsIn = Annotated[
    AllowedEndpoints | None,
    AfterValidator(_distinct),
    Field(
        description="the endpoints the key may call, each once (chat.completions, responses, "
        "embeddings, completions, models); null: all endpoints",
        examples=[["chat.completions", "models"]],
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("give a name, or leave the field out")
    return value


class CreateProject(_Request):
    """Body of ``POST /v1/projects``."""

    name: Name


class CreateKey(_Request):
    """Body of ``POST /v1/projects/{project_id}/keys``."""

    name: Name
    expires_at: AwareDatetime | None = Field(
        None, description="when the key stops working; Unix seconds or ISO 8601 with timezone"
    )
    rate_limits: RateLimitsIn = None
    budget: BudgetIn = None
    allowed_models: ModelsIn = None
    allowed_endpoints: EndpointsIn = None


class UpdateKey(_Request):
    """Body of ``PATCH /v1/projects/{project_id}/keys/{key_id}``.

    A field left out stays as it is; a policy field given as ``null`` removes that limit.
    """

    name: Name | None = None
    rate_limits: RateLimitsIn = None
    budget: BudgetIn = None
    allowed_models: ModelsIn = None
    allowed_endpoints: EndpointsIn = None

    _name_not_null = field_validator("name", mode="before")(_not_null)


class UpdateProject(_Request):
    """Body of ``PATCH /v1/projects/{project_id}``: left out, unchanged; null, no limit."""

    name: Name | None = None
    rate_limits: Annotated[
        RateLimitsInput | None,
        Field(
            description="requests and tokens per minute for all the project's keys together; "
            "null: none",
            examples=[_RATE_LIMITS_EXAMPLE],
        ),
    ] = None
    budget: Annotated[
        Budget | None,
        Field(
            description="spend for all the project's keys together; null: no budget",
            examples=[_BUDGET_EXAMPLE],
        ),
    ] = None

    _name_not_null = field_validator("name", mode="before")(_not_null)


class RotateKey(_Request):
    """Body of ``POST .../rotate``: how long the old secret keeps working (0: not at all)."""

    grace_period_seconds: StrictInt = Field(0, ge=0, examples=[3600])


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
        examples=[_RATE_LIMITS_EXAMPLE],
    )
    budget: Budget | None = Field(
        None,
        description="spend budget for all the project's keys together; limit_usd as a "
        "decimal string, in plain notation",
        examples=[_BUDGET_EXAMPLE],
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
        None, description="the key's own rate limits; null: none", examples=[_RATE_LIMITS_EXAMPLE]
    )
    budget: Budget | None = Field(
        None,
        description="the key's own spend budget; limit_usd as a decimal string, in plain "
        "notation; null: none",
        examples=[_BUDGET_EXAMPLE],
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
