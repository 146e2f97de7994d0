"""What each field of the management API's bodies takes: validated here, and stated in the
OpenAPI document alike (every constraint a request can be refused for is in its schema; what no
schema can state, its description says). ``models.py`` builds the bodies from these.

Policies use the shared types of ``shared/policy.py``, their integers strict here (``true`` or
``"600"`` is not a rate, ``600.0`` is 600); ``null`` or absent means no limit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict

from shared.events import KEY_NAME_MAX, free_text
from shared.openapi import NOT_BLANK_FREE_TEXT
from shared.policy import (
    LIMIT_USD_PLACES,
    AllowedEndpoints,
    AllowedModels,
    Budget,
    RateLimits,
)

# The key events' own bounds, so that every name the API takes is one an event can carry.
NAME_MAX = KEY_NAME_MAX
# An amount shared.policy.parse_usd takes, in plain notation: more than 0, at most a billion
# dollars, at most 6 places (the documents state it; tests/foundation/test_openapi_unit.py
# holds it to parse_usd).
USD_AMOUNT = (
    r"^(?:[1-9][0-9]{0,8}(?:\.[0-9]{1,6})?"
    r"|0?\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}"
    r"|0000[1-9][0-9]?|00000[1-9])"
    r"|1000000000(?:\.0{1,6})?)$"
)
# A time held in UTC by Python (and so by this service): years 0001 to 9998, as the document
# says it (an ISO 8601 text's year); later in 9999 is refused only past 9999 in UTC.
BEFORE_YEAR_9999 = (
    r"^(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]"
    r"|999[0-8])-"
)

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    AfterValidator(free_text),
    Field(
        examples=["production-app"],
        description="1 to 64 characters, trimmed; not blank, no control characters",
        json_schema_extra={"pattern": NOT_BLANK_FREE_TEXT},
    ),
]


def whole(value: object) -> object:
    """A JSON number with no fraction (``600.0``) is the integer it equals, as JSON Schema's
    ``integer`` says; ``true`` and ``"600"`` are still refused (the fields are strict)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RateLimitsInput(RateLimits):
    """Requests and tokens per minute, as a request gives them (whole numbers, at least 1)."""

    model_config = ConfigDict(strict=True)

    _whole_rates = field_validator("requests_per_minute", "tokens_per_minute", mode="before")(whole)


class BudgetInput(Budget):
    """A budget as a request gives it: its amount a decimal string (the document's pattern)."""

    limit_usd: Annotated[
        Decimal,
        WithJsonSchema({"type": "string", "pattern": USD_AMOUNT, "maxLength": 20}),
    ] = Field(
        examples=["25.00"],
        description=f"a decimal string, more than 0, at most 1000000000, at most "
        f"{LIMIT_USD_PLACES} places",
    )


def _distinct(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if values is not None and len(set(values)) != len(values):
        repeated = next(v for i, v in enumerate(values) if v in values[:i])
        raise ValueError(f"'{repeated[:64]}' is listed twice")
    return values


RATE_LIMITS_EXAMPLE = {"requests_per_minute": 600, "tokens_per_minute": 100_000}
BUDGET_EXAMPLE = {"limit_usd": "25.00", "period": "month"}
RateLimitsIn = Annotated[
    RateLimitsInput | None,
    Field(
        description="requests and tokens per minute for this key; either may be left out; "
        "null: no rate limit",
        examples=[RATE_LIMITS_EXAMPLE],
    ),
]
BudgetIn = Annotated[
    BudgetInput | None,
    Field(
        description="spend in USD per UTC day, UTC calendar month, or in total; "
        'limit_usd a decimal string such as "25.00"; null: no budget',
        examples=[BUDGET_EXAMPLE],
    ),
]
# Marks the list of catalogue ids: the served document names the running catalogue's (main.py).
CATALOGUE_IDS = "x-tollgate-catalogue-ids"
ModelsIn = Annotated[
    AllowedModels | None,
    AfterValidator(_distinct),
    Field(
        description="catalogue ids of the models the key may use, each once; null: all models",
        examples=[["Qwen/Qwen2.5-0.5B-Instruct"]],
        json_schema_extra={"uniqueItems": True, CATALOGUE_IDS: True},
    ),
]
EndpointsIn = Annotated[
    AllowedEndpoints | None,
    AfterValidator(_distinct),
    Field(
        description="the endpoints the key may call, each once (chat.completions, responses, "
        "embeddings, completions, models); null: all endpoints",
        examples=[["chat.completions", "models"]],
        json_schema_extra={"uniqueItems": True},
    ),
]


def _held_in_utc(moment: datetime) -> datetime:
    """Refuse a time past 9999 in UTC (9999-12-31T23:59:59-01:00): no store can hold it."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time must be before the year 10000 in UTC") from None
    return moment


Expiry = Annotated[
    AwareDatetime,
    AfterValidator(_held_in_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": BEFORE_YEAR_9999}),
]


def not_null(value: object) -> object:
    """Refuse null for a field that may only be left out (a name)."""
    if value is None:
        raise ValueError("give a name, or leave the field out")
    return value


def never_null(schema: JsonDict) -> None:
    """A name as not_null leaves it in the document: a name, or left out; never null."""
    schema.pop("default", None)  # left out: unchanged
    branches = schema.pop("anyOf")
    assert isinstance(branches, list)
    (name,) = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"]
    assert isinstance(name, dict)
    schema.update(name)
