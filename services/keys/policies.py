"""Key and project policies between the API's types (``shared/policy.py``) and their rows.

Stored shapes: ``rate_limits`` is a jsonb object holding only the limits that are set (an
object with neither is no limit, stored as NULL); ``budget`` is ``{"limit_usd", "period"}``
with the amount as a decimal string in plain notation, as given (``"25.00"`` stays
``"25.00"``, ``"1e2"`` becomes ``"100"``), so every answer and every key state shows the same
text; the scopes are text arrays in the order given.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from services.keys.errors import ModelNotInCatalogue
from services.keys.rows import KeyPolicy, Row, json_value
from shared.policy import Budget, RateLimits

KEY_FIELDS = ("rate_limits", "budget", "allowed_models", "allowed_endpoints")
PROJECT_FIELDS = ("rate_limits", "budget")


def rate_limits_json(limits: RateLimits | None) -> dict[str, Any] | None:
    """Rate limits as stored: only the limits set; None when none is."""
    if limits is None or not limits.limited:
        return None
    return limits.model_dump(exclude_none=True)


def budget_json(budget: Budget | None) -> dict[str, Any] | None:
    """A budget as stored, its amount in plain decimal notation."""
    if budget is None:
        return None
    return {"limit_usd": format(budget.limit_usd, "f"), "period": budget.period}


def stored(values: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of each policy field in values (the API's types, or None)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name == "rate_limits":
            out[name] = rate_limits_json(value)
        elif name == "budget":
            out[name] = budget_json(value)
        elif name in ("allowed_models", "allowed_endpoints"):
            out[name] = None if value is None else list(value)
        else:
            out[name] = value
    return out


def key_policy(row: Row) -> KeyPolicy:
    """A key row's own policy, as stored."""
    models, endpoints = row["allowed_models"], row["allowed_endpoints"]
    return KeyPolicy(
        rate_limits=json_value(row["rate_limits"]),
        budget=json_value(row["budget"]),
        allowed_models=None if models is None else list(models),
        allowed_endpoints=None if endpoints is None else list(endpoints),
    )


def rate_limits_of(text: str | None) -> RateLimits | None:
    """A stored rate_limits column as the shared type."""
    value = json_value(text)
    return None if value is None else RateLimits.model_validate(value)


def budget_of(text: str | None) -> Budget | None:
    """A stored budget column as the shared type."""
    value = json_value(text)
    return None if value is None else Budget.model_validate(value)


def check_models(models: Collection[str] | None, catalogue: Collection[str]) -> None:
    """Refuse an allowed model that is not in the catalogue, naming it."""
    for model in models or ():
        if model not in catalogue:
            raise ModelNotInCatalogue(model)
