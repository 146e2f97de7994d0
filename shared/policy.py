"""Key policies: rate limits, spend budgets, model and endpoint scopes (README.md: "Key policies").

A key carries its own policy, and its project's ``rate_limits`` and ``budget`` ride on each of
the project's key states (``project_rate_limits``, ``project_budget``): the gateway learns
everything that governs a request from the one state it already looks up, and each key's
version orders its changes, so a project change and a key change can never arrive out of order
at a gateway. A project change re-publishes every active key of the project.

Every field is optional; ``None`` means no limit (all models, all endpoints).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

Period = Literal["day", "month", "total"]
Scope = Literal["chat.completions", "responses", "embeddings", "completions", "models"]
SCOPES: tuple[Scope, ...] = ("chat.completions", "responses", "embeddings", "completions", "models")
# The scope each gateway path needs.
SCOPE_OF_PATH: dict[str, Scope] = {
    "/v1/chat/completions": "chat.completions",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/completions": "completions",
    "/v1/models": "models",
}
REQUESTS_PER_MINUTE_MAX = 10**9
TOKENS_PER_MINUTE_MAX = 10**12
# Budgets are counted in Redis as whole nano-dollars in a Lua number (a double, exact to 2**53):
# a limit up to a billion dollars is exact there with room for its in-flight reservations.
LIMIT_USD_MAX = Decimal(1_000_000_000)
LIMIT_USD_PLACES = 6
ALLOWED_MODELS_MAX = 256
MODEL_MAX = 256  # as shared.events.MODEL_MAX (events import this module, not the reverse)


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("only printable characters are allowed")
    return value


ModelId = Annotated[
    str, StringConstraints(min_length=1, max_length=MODEL_MAX), AfterValidator(_printable)
]


class _Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateLimits(_Policy):
    """Requests and tokens per minute; the whole minute's allowance may be used at once."""

    requests_per_minute: int | None = Field(
        None, ge=1, le=REQUESTS_PER_MINUTE_MAX, examples=[600], description="requests per minute"
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        le=TOKENS_PER_MINUTE_MAX,
        examples=[100_000],
        description="input plus output tokens per minute",
    )

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


def parse_usd(value: object) -> Decimal:
    """A positive amount of dollars written as a decimal string, at most 6 places.

    A ``Decimal`` is taken too: it is what ``Budget.model_dump()`` gives back, and a state
    rebuilt from a dump (``KeyEvent(**state.model_dump())``) must validate again.
    """
    if not isinstance(value, str | int | Decimal) or isinstance(value, bool):
        raise ValueError('write the amount as a decimal string, such as "25.00"')  # noqa: TRY004
    text = str(value).strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text[:32]!r} is not a decimal amount") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError("the amount must be more than 0")
    if amount > LIMIT_USD_MAX:
        raise ValueError(f"the amount must be at most {LIMIT_USD_MAX}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -LIMIT_USD_PLACES:
        raise ValueError(f"the amount may have at most {LIMIT_USD_PLACES} decimal places")
    return amount


class Budget(_Policy):
    """Spend in USD per UTC day, UTC calendar month, or in total."""

    limit_usd: Decimal = Field(
        examples=["25.00"], description="a decimal string, more than 0, at most 6 places"
    )
    period: Period = Field(examples=["month"], description="day, month (UTC calendar) or total")

    @field_validator("limit_usd", mode="before")
    @classmethod
    def _amount(cls, value: object) -> Decimal:
        return parse_usd(value)


AllowedModels = Annotated[
    tuple[ModelId, ...],
    Field(
        min_length=1,
        max_length=ALLOWED_MODELS_MAX,
        description=f"catalogue ids (each at most {MODEL_MAX} characters); absent: all models",
        examples=[["Qwen/Qwen2.5-0.5B-Instruct"]],
    ),
]
AllowedEndpoints = Annotated[
    tuple[Scope, ...],
    Field(
        min_length=1,
        description="endpoints the key may call; absent: all",
        examples=[["chat.completions", "models"]],
    ),
]


class ProjectPolicy(_Policy):
    """What a project limits for all its keys together."""

    rate_limits: RateLimits | None = Field(
        None, description="the project's rate limits, for all its keys together"
    )
    budget: Budget | None = Field(
        None, description="the project's spend budget, for all its keys together"
    )


def allows_model(allowed: tuple[str, ...] | None, model: str) -> bool:
    """True when a scope of models admits this catalogue id."""
    return allowed is None or model in allowed


def allows_scope(allowed: tuple[Scope, ...] | None, scope: Scope) -> bool:
    """True when a scope of endpoints admits this one."""
    return allowed is None or scope in allowed


__all__ = [
    "SCOPES",
    "SCOPE_OF_PATH",
    "AllowedEndpoints",
    "AllowedModels",
    "Budget",
    "Period",
    "ProjectPolicy",
    "RateLimits",
    "Scope",
    "allows_model",
    "allows_scope",
    "parse_usd",
]
