"""Request and response bodies of the management API, in OpenAI's list and object style.

Times in answers are Unix seconds, as in OpenAI's API; ``expires_at`` is accepted as Unix
seconds or as an ISO 8601 time with a timezone.
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
)

from shared.events import KEY_NAME_MAX, Sha256Hex, free_text

# The key events' own bounds, so that every name the API takes is one an event can carry.
NAME_MAX = KEY_NAME_MAX

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    AfterValidator(free_text),
    Field(examples=["production-app"], description="1 to 64 characters, trimmed"),
]
KeyStatusView = Literal["active", "expired", "revoked"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateProject(_Request):
    """Body of ``POST /v1/projects``."""

    name: Name


class CreateKey(_Request):
    """Body of ``POST /v1/projects/{project_id}/keys``."""

    name: Name
    expires_at: AwareDatetime | None = Field(
        None, description="when the key stops working; Unix seconds or ISO 8601 with timezone"
    )


class RenameKey(_Request):
    """Body of ``PATCH /v1/projects/{project_id}/keys/{key_id}``."""

    name: Name


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
