"""The events on Tollgate's topics: one frozen, versioned pydantic model per event type.

``KeyState`` is also the body of the key service's verify answer (the gateway's cache miss).

``KeyEvent`` (on ``keys.events``) carries a key's whole current state, never its secret.
``UsageRecorded`` (on ``usage.events``) is one authenticated request's usage.
``DeadLetter`` (on ``usage.events.dlq``) is a record a consumer could not parse or apply.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.ids import uuid7

SCHEMA_VERSION = 1
KeyEventType = Literal[
    "key.created", "key.updated", "key.default_changed", "key.rotated", "key.revoked"
]
KeyStatus = Literal["active", "revoked"]
UsageSource = Literal["upstream", "estimated"]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
TokenCount = Annotated[int, Field(ge=0, le=2**40)]


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

    key_id: str = Field(examples=["key_4f2k9..."])
    project_id: str = Field(examples=["proj_8d0a..."])
    name: str = Field(examples=["production-app"])
    hint: str = Field(examples=["sk-...Ac4A"])
    key_hash: Sha256Hex = Field(description="SHA-256 hex of the full secret")
    previous_key_hash: Sha256Hex | None = Field(
        None, description="the old secret's hash while a rotation's grace period lasts"
    )
    previous_valid_until: AwareDatetime | None = None
    status: KeyStatus = "active"
    is_default: bool = False
    expires_at: AwareDatetime | None = None
    created_at: AwareDatetime | None = None
    version: int = Field(ge=1, description="monotonic per key; older versions are ignored")


class KeyEvent(Event, KeyState):
    """A key's whole current state after a change (event-carried state transfer)."""

    type: KeyEventType = Field(examples=["key.created"])

    def state(self) -> KeyState:
        """The state this event carries, without the event's own fields."""
        return KeyState.model_validate(self.model_dump(include=set(KeyState.model_fields)))


class UsageRecorded(Event):
    """One request that passed authentication, written after its response ended."""

    request_id: str
    project_id: str
    key_id: str
    model: str
    endpoint: str = Field(examples=["/v1/chat/completions"])
    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    cached_input_tokens: TokenCount = 0
    status_code: int = Field(ge=100, le=599)
    latency_ms: int = Field(ge=0)
    stream: bool = False
    usage_source: UsageSource = "upstream"


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


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
