"""Bodies of the organization API: admin keys and audit logs, in OpenAI's shapes
(``organization.admin_api_key``, its ``redacted_value``, its ``value`` in the create and
rotate answers only; ``organization.audit_log``; OpenAI's list shape)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from services.keys.fields import Name
from shared.events import AuditActor, AuditEventType, Permission
from shared.ids import PROJECT_ID_CHARS

MAX_SCOPE_PROJECTS = 100
ProjectIdIn = Annotated[str, Field(pattern=f"^{PROJECT_ID_CHARS}$", max_length=70)]


def _distinct(values: list[str] | None) -> list[str] | None:
    if values is not None and len(set(values)) != len(values):
        repeated = next(v for i, v in enumerate(values) if v in values[:i])
        raise ValueError(f"'{repeated[:64]}' is listed twice")
    return values


# What _one_of checks, as the document says it: exactly one of the two is given (not null).
_ONE_OF: JsonDict = {
    "oneOf": [
        {"required": ["organization"], "properties": {"organization": {"const": True}}},
        {"required": ["project_ids"], "properties": {"project_ids": {"type": "array"}}},
    ]
}


class AdminKeyScope(BaseModel):
    """``{"organization": true}`` or ``{"project_ids": [...]}``: exactly one of the two."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_OF)

    organization: Literal[True] | None = Field(None, description="the whole organization")
    project_ids: (
        Annotated[
            list[ProjectIdIn],
            Field(
                min_length=1, max_length=MAX_SCOPE_PROJECTS, json_schema_extra={"uniqueItems": True}
            ),
            AfterValidator(_distinct),
        ]
        | None
    ) = Field(
        None,
        description="these projects only (1 to 100 ids, each once); a project that does not "
        "exist, or is outside the caller's scope, is refused (400)",
    )

    @model_validator(mode="after")
    def _one_of(self) -> AdminKeyScope:
        if (self.organization is None) == (self.project_ids is None):
            raise ValueError('give {"organization": true} or {"project_ids": [...]}')
        return self


class CreateAdminKey(BaseModel):
    """Body of ``POST /v1/organization/admin_api_keys``."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    scope: AdminKeyScope = Field(examples=[{"project_ids": ["proj_8d0a..."]}])
    permissions: Annotated[
        list[Permission],
        Field(min_length=1, max_length=8, json_schema_extra={"uniqueItems": True}),
        AfterValidator(_distinct),
    ] = Field(
        examples=[["keys:read", "keys:write"]],
        description="each once; only permissions the caller holds (else 403)",
    )


class AdminApiKey(BaseModel):
    """An admin key as listed: everything but the secret."""

    object: Literal["organization.admin_api_key"] = "organization.admin_api_key"
    id: str = Field(examples=["admkey_4f2k9..."])
    name: str
    redacted_value: str = Field(examples=["sk-...Ac4A"], description="sk-... and the last 4")
    created_at: int
    last_used_at: int | None = Field(None, description="within a minute")
    owner: AuditActor = Field(description="who created it: root or an admin key")
    scope: dict[str, Any] = Field(examples=[{"organization": True}])
    permissions: list[Permission]
    status: Literal["active", "revoked"]
    rotated_at: int | None = None
    revoked_at: int | None = None


class AdminApiKeyWithValue(AdminApiKey):
    """An admin key just created or rotated: its secret, in this answer only."""

    value: str = Field(description="the full secret; it is not stored and never shown again")


class AdminKeyDeleted(BaseModel):
    """The answer to a revoke."""

    object: Literal["organization.admin_api_key.deleted"] = "organization.admin_api_key.deleted"
    id: str
    deleted: bool = True


class AdminKeyList(BaseModel):
    """A page of admin keys."""

    object: Literal["list"] = "list"
    data: list[AdminApiKey]
    first_id: str | None
    last_id: str | None
    has_more: bool


class AuditLog(BaseModel):
    """One audit log entry."""

    object: Literal["organization.audit_log"] = "organization.audit_log"
    id: str
    type: AuditEventType
    effective_at: int = Field(description="Unix seconds")
    actor: AuditActor
    project_id: str | None
    resource_id: str
    changes: dict[str, Any] = Field(description="{before, after}: the fields that changed")
    ip: str | None
    user_agent: str | None
    request_id: str | None


class AuditLogList(BaseModel):
    """A page of audit log entries, newest first."""

    object: Literal["list"] = "list"
    data: list[AuditLog]
    first_id: str | None
    last_id: str | None
    has_more: bool
