"""The events on Tollgate's topics: one frozen, versioned pydantic model per event type.

``KeyState`` is also the body of the key service's verify answer (the gateway's cache miss).

``KeyEvent`` (on ``keys.events``) carries a key's whole current state, never its secret.
``UsageRecorded`` (on ``usage.events``) is one authenticated request's usage.
``DeadLetter`` (on ``usage.events.dlq``) is a record a consumer could not parse or apply.
``AuditEvent`` (on ``audit.events``) is one entry of the key service's audit log.
``AdminKeyState`` is an admin key's whole state (never its secret), as a cache holds it.

Every string field has a length bound and a character set that Kafka and PostgreSQL accept
(no NUL, no lone surrogate, no other C0 control), enforced here: what a producer can build,
every consumer can store. ``model`` on a usage event is a catalogue id, or ``UNKNOWN_MODEL``
for a request that named no model the catalogue knows; never the client's own string.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from shared.ids import KEY_ID_CHARS, PROJECT_ID_CHARS, REQUEST_ID_CHARS, uuid7
from shared.policy import MODEL_MAX, AllowedEndpoints, AllowedModels, Budget, RateLimits

SCHEMA_VERSION = 1
KEY_NAME_MAX = 64
# The model of a usage event whose request named no model the catalogue knows (unknown, missing,
# not a string). Parentheses keep it out of any real id; the catalogue refuses it as an id.
UNKNOWN_MODEL = "(unknown)"
KeyEventType = Literal[
    "key.created", "key.updated", "key.default_changed", "key.rotated", "key.revoked"
]
KeyStatus = Literal["active", "revoked"]
UsageSource = Literal["upstream", "estimated"]
Endpoint = Literal["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings"]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
StateMac = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}:[0-9a-f]{64}$")]
TOKEN_COUNT_MAX = 2**40
TokenCount = Annotated[int, Field(ge=0, le=TOKEN_COUNT_MAX)]

# NUL (PostgreSQL's text refuses it), lone surrogates (UTF-8 cannot encode them), the other C0
# controls and DEL (they break logs and terminals; names never need them).
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def free_text(value: str) -> str:
    """Refuse what Kafka's UTF-8 or PostgreSQL's text cannot hold, and other C0 controls."""
    if _CONTROL.search(value):
        raise ValueError("text cannot hold NUL, control characters or lone surrogates")
    return value


def printable(value: str) -> str:
    """Refuse anything but printable characters (no controls, format marks or surrogates)."""
    if not value.isprintable():
        raise ValueError("only printable characters are allowed")
    return value


KeyId = Annotated[str, StringConstraints(pattern=f"^{KEY_ID_CHARS}$")]
ProjectId = Annotated[str, StringConstraints(pattern=f"^{PROJECT_ID_CHARS}$")]
RequestId = Annotated[str, StringConstraints(pattern=f"^{REQUEST_ID_CHARS}$")]
KeyHint = Annotated[str, StringConstraints(pattern=r"^sk-\.\.\.[A-Za-z0-9]{4}$")]
KeyName = Annotated[
    str, StringConstraints(min_length=1, max_length=KEY_NAME_MAX), AfterValidator(free_text)
]
# Empty is accepted for events written before UNKNOWN_MODEL existed; no gateway writes it now.
ModelName = Annotated[str, StringConstraints(max_length=MODEL_MAX), AfterValidator(printable)]
UPSTREAM_ENDPOINT_MAX = 512
UpstreamEndpoint = Annotated[
    str,
    StringConstraints(min_length=1, max_length=UPSTREAM_ENDPOINT_MAX),
    AfterValidator(printable),
]


class Event(BaseModel):
    """Base of every event: immutable, strict about unknown fields, timezone-aware."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, description="event schema version")
    event_id: uuid.UUID = Field(default_factory=uuid7, description="UUIDv7, the dedupe key")
    occurred_at: AwareDatetime = Field(description="when the change or request happened (UTC)")

    def to_bytes(self) -> bytes:
        """UTF-8 JSON, as it goes on the topic."""
        return self.model_dump_json().encode()


class KeyState(BaseModel):
    """A key's whole current state, never its secret: what caches hold and verify answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: KeyId = Field(
        description="the key's id: key_ and up to 64 letters, digits or _",
        examples=["key_4f2k9QpL0xZa7TmB3cWd1YhE"],
    )
    project_id: ProjectId = Field(
        description="the owning project's id: proj_ and up to 64 letters, digits or _",
        examples=["proj_8d0aJk2LmN4pQ6rS8tU0vW2x"],
    )
    name: KeyName = Field(
        description=f"1 to {KEY_NAME_MAX} characters, no control characters",
        examples=["production-app"],
    )
    hint: KeyHint = Field(
        description="sk-... and the secret's last 4 characters", examples=["sk-...Ac4A"]
    )
    key_hash: Sha256Hex = Field(
        description="SHA-256 hex of the full secret",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )
    previous_key_hash: Sha256Hex | None = Field(
        None, description="the old secret's hash while a rotation's grace period lasts"
    )
    previous_valid_until: AwareDatetime | None = Field(
        None, description="when the old secret stops working (the end of the grace period)"
    )
    status: KeyStatus = Field(
        "active", description="active, or revoked (for good: a revoked key never comes back)"
    )
    is_default: bool = Field(False, description="the project's default key")
    expires_at: AwareDatetime | None = Field(
        None, description="when the key stops working on its own; absent: never"
    )
    created_at: AwareDatetime | None = Field(None, description="when the key was created")
    version: int = Field(ge=1, description="monotonic per key; older versions are ignored")
    rate_limits: RateLimits | None = Field(None, description="the key's own rate limits")
    budget: Budget | None = Field(None, description="the key's own spend budget")
    allowed_models: AllowedModels | None = Field(
        None, description="the catalogue ids the key may call; absent: all models"
    )
    allowed_endpoints: AllowedEndpoints | None = Field(
        None, description="the endpoint scopes the key may call; absent: all"
    )
    project_rate_limits: RateLimits | None = Field(
        None, description="the project's rate limits, for all its keys together"
    )
    project_budget: Budget | None = Field(
        None, description="the project's spend budget, for all its keys together"
    )
    # Last, and None by default like any field added after it: states made before a new
    # optional field keep their MAC (shared/state_mac.py leaves None fields out).
    mac: StateMac | None = Field(
        None,
        description="the key service's HMAC-SHA256 of the state (shared/state_mac.py): the id"
        " of the keyring entry that made it, a colon, the hex digest; gateways refuse a state"
        " whose MAC is missing or wrong",
        examples=["k1:" + "0" * 64],
    )

    @property
    def has_policy(self) -> bool:
        """True when a limit or a budget applies to this key's requests."""
        return any(
            p is not None
            for p in (self.rate_limits, self.budget, self.project_rate_limits, self.project_budget)
        )


class KeyEvent(Event, KeyState):
    """A key's whole current state after a change (event-carried state transfer)."""

    type: KeyEventType = Field(
        examples=["key.created"],
        description="what changed: created, updated (its name or policy, or its project's "
        "policy), default_changed, rotated (a new secret) or revoked",
    )

    def state(self) -> KeyState:
        """The state this event carries, without the event's own fields."""
        return KeyState.model_validate(self.model_dump(include=set(KeyState.model_fields)))


class UsageRecorded(Event):
    """One request that passed authentication, written after its response ended."""

    request_id: RequestId = Field(
        description="the caller's X-Request-Id when sane (1 to 128 of A-Z a-z 0-9 . _ -), "
        "else one the gateway made",
        examples=["req_Q2x9LmB7tPz4Kd1Wc8Ye"],
    )
    project_id: ProjectId = Field(
        description="the key's project", examples=["proj_8d0aJk2LmN4pQ6rS8tU0vW2x"]
    )
    key_id: KeyId = Field(
        description="the key that authenticated the request (the message key)",
        examples=["key_4f2k9QpL0xZa7TmB3cWd1YhE"],
    )
    model: ModelName = Field(
        description=f"the catalogue id of the model, or {UNKNOWN_MODEL!r} when the request "
        f"named no model the catalogue knows; printable, at most {MODEL_MAX} characters",
        examples=["Qwen/Qwen2.5-0.5B-Instruct", UNKNOWN_MODEL],
    )
    endpoint: Endpoint = Field(
        description="the gateway endpoint called", examples=["/v1/chat/completions"]
    )
    input_tokens: TokenCount = Field(
        0, description="prompt tokens, cached ones included", examples=[12]
    )
    output_tokens: TokenCount = Field(0, description="completion tokens", examples=[34])
    cached_input_tokens: TokenCount = Field(
        0, description="the part of input_tokens the upstream served from its cache", examples=[0]
    )
    status_code: int = Field(
        ge=100, le=599, description="the HTTP status the client got", examples=[200]
    )
    latency_ms: int = Field(
        ge=0,
        description="from the gateway receiving the request to its response's end",
        examples=[412],
    )
    stream: bool = Field(False, description="the response was streamed (server-sent events)")
    usage_source: UsageSource = Field(
        "upstream",
        description="upstream: the model server's own counts; estimated: the gateway's own "
        "estimate (the upstream reported none: an error, or a stream cut short)",
    )
    upstream_endpoint: UpstreamEndpoint | None = Field(
        None,
        description="the model server that served the request (its base URL in the catalogue, "
        "or an address its DNS name gave), or the last one tried when none answered; null "
        "when the request reached none (refused by the gateway) and in events written before "
        "fleets",
        examples=["http://10.0.0.11:8000/v1"],
    )


class DeadLetter(Event):
    """A record a consumer could not parse or apply, with the reason; kept whole if it fits.

    A letter that would not fit on the DLQ topic keeps only the first bytes of the value
    (``truncated``); ``original_size`` and ``original_sha256`` still identify the whole.
    """

    consumer_group: str = Field(description="the consumer group that gave up on the record")
    source_topic: str = Field(description="topic the record was read from")
    source_partition: int = Field(ge=0, description="its partition")
    source_offset: int = Field(ge=0, description="its offset")
    reason: str = Field(
        max_length=2000,
        description="why it cannot be applied: a validation error, or the database's SQLSTATE"
        " and message",
    )
    payload_base64: str = Field(
        description="the original record value, base64 (only its first bytes when truncated)"
    )
    original_size: int = Field(0, ge=0, description="size of the original value in bytes")
    original_sha256: Sha256Hex | None = Field(
        None, description="SHA-256 hex of the whole original value"
    )
    truncated: bool = Field(
        False, description="payload_base64 holds a prefix only: the whole was too large"
    )


AuditEventType = Literal[
    "project.created",
    "project.updated",
    "api_key.created",
    "api_key.updated",
    "api_key.rotated",
    "api_key.deleted",
    "admin_api_key.created",
    "admin_api_key.rotated",
    "admin_api_key.deleted",
    "login.succeeded",
    "login.failed",
]
AUDIT_EVENT_TYPES: tuple[AuditEventType, ...] = get_args(AuditEventType)
Permission = Literal[
    "projects:read",
    "projects:write",
    "keys:read",
    "keys:write",
    "usage:read",
    "costs:read",
    "audit:read",
    "admin_keys:write",
]
PERMISSIONS: tuple[Permission, ...] = get_args(Permission)
ADMIN_KEY_ID_CHARS = r"admkey_[A-Za-z0-9_]{1,64}"
AdminKeyId = Annotated[str, StringConstraints(pattern=f"^{ADMIN_KEY_ID_CHARS}$")]
USER_AGENT_MAX = 512


class AdminKeyState(BaseModel):
    """An admin key's whole current state, never its secret: what a service's cache holds to
    check a management call (the key service's now; metering's and billing's, fed as API
    key states are, next)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: AdminKeyId = Field(description="the admin key's id: admkey_ and up to 64 characters")
    name: KeyName = Field(description=f"1 to {KEY_NAME_MAX} characters, no control characters")
    hint: KeyHint = Field(description="sk-... and the secret's last 4 characters")
    key_hash: Sha256Hex = Field(description="SHA-256 hex of the full secret")
    status: KeyStatus = Field(description="active, or revoked (for good)")
    organization: bool = Field(description="scoped to the whole organization")
    project_ids: tuple[ProjectId, ...] = Field(
        (), description="the projects in scope when not the whole organization"
    )
    permissions: tuple[Permission, ...] = Field(description="what the key may do")
    version: int = Field(ge=1, description="monotonic per admin key; older ones are ignored")


class AuditActor(BaseModel):
    """Who made a change: root (the operator token) or an admin key (its id and hint); for a
    console sign-in, the console session (signed in as root or an admin key, or ``anonymous``
    when the sign-in failed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["root", "admin_key", "console_session"] = Field(
        description="root, admin_key, or console_session (a console sign-in)"
    )
    id: str = Field(
        max_length=80,
        pattern=f"^(root|anonymous|{ADMIN_KEY_ID_CHARS})$",
        description="the admin key's id, 'root', or 'anonymous' (a failed console sign-in)",
        examples=["admkey_4f2k9QpL0xZa7TmB3cWd1YhE"],
    )
    hint: KeyHint | None = Field(None, description="the admin key's hint; null for root")


class AuditEvent(Event):
    """One change the key service made, as its audit log holds it (never a secret)."""

    id: str = Field(
        pattern=r"^audit_log-[0-9a-f]{32}$",
        description="the audit log entry's id (audit_log- and the event_id's hex)",
        examples=["audit_log-0193a1b2c3d47e8f9a0b1c2d3e4f5a6b"],
    )
    type: AuditEventType = Field(description="what changed", examples=["api_key.created"])
    actor: AuditActor = Field(description="who changed it")
    project_id: ProjectId | None = Field(
        None, description="the project changed or holding what changed; null: the organization"
    )
    resource_id: str = Field(
        max_length=80,
        pattern=r"^[A-Za-z0-9_]+$",
        description="the id of what changed (project, API key or admin key)",
    )
    changes: dict[str, Any] = Field(
        description="{'before': {...} or null, 'after': {...} or null}: the fields that changed"
        " (names, policies, scopes, hints, status), never a secret nor a key hash"
    )
    ip: str | None = Field(None, max_length=64, description="the client's address")
    user_agent: str | None = Field(
        None,
        max_length=USER_AGENT_MAX,
        description=f"the client's User-Agent, at most {USER_AGENT_MAX} characters, printable",
    )
    request_id: RequestId | None = Field(None, description="the request's X-Request-Id")

    @field_validator("user_agent")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return None if value is None else printable(value)


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
