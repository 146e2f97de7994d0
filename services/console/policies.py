"""Key and project policies as the console's forms hold them and as its pages show them.

The key service checks every value (400 with ``param``); the console only turns the form's
text into the API's JSON: whole numbers for the rates, the amount as the decimal string typed
(never through float). Text that is not a whole number goes as typed, so that the refusal and
its message are the key service's own. An empty field means no limit; on an edit, the form
holds the whole policy, so a field cleared is sent as ``null`` and that limit is removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.policy import SCOPES

PERIOD_CHOICES: tuple[tuple[str, str], ...] = (
    ("month", "per month (UTC)"),
    ("day", "per day (UTC)"),
    ("total", "in total"),
)
SCOPE_LABELS: dict[str, str] = {
    "chat.completions": "chat",
    "responses": "responses",
    "embeddings": "embeddings",
    "completions": "completions",
    "models": "models",
}
ENDPOINT_CHOICES: tuple[tuple[str, str], ...] = tuple(
    (scope, f"/v1/{scope.replace('.', '/')}") for scope in SCOPES
)
# The form field each of the key service's params is about (nested params dotted).
FIELD_OF_PARAM: dict[str, str] = {
    "name": "name",
    "rate_limits": "rpm",
    "rate_limits.requests_per_minute": "rpm",
    "rate_limits.tokens_per_minute": "tpm",
    "budget": "budget_usd",
    "budget.limit_usd": "budget_usd",
    "budget.period": "budget_period",
    "allowed_models": "models",
    "allowed_endpoints": "endpoints",
}
_WHOLE = re.compile(r"[0-9]{1,18}")


def _rate(text: str) -> int | str | None:
    """A rate as the API takes it: None when empty, an int when whole, else the text."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    if not cleaned:
        return None
    return int(cleaned) if _WHOLE.fullmatch(cleaned) else cleaned


def _amount(text: str) -> str | None:
    cleaned = text.strip().removeprefix("$").replace(",", "").strip()
    return cleaned or None


@dataclass
class PolicyForm:
    """The policy fields of a create or edit form, as text, as the user gave them."""

    rpm: str = ""
    tpm: str = ""
    budget_usd: str = ""
    budget_period: str = "month"
    models: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> PolicyForm:
        """The form filled in with a key's or project's current policy."""
        rates = item.get("rate_limits") or {}
        budget = item.get("budget") or {}

        def text(value: object) -> str:
            return "" if value is None else str(value)

        return cls(
            rpm=text(rates.get("requests_per_minute")),
            tpm=text(rates.get("tokens_per_minute")),
            budget_usd=text(budget.get("limit_usd")),
            budget_period=str(budget.get("period") or "month"),
            models=list(item.get("allowed_models") or []),
            endpoints=list(item.get("allowed_endpoints") or []),
        )

    def rate_limits(self) -> dict[str, int | str] | None:
        rates = {"requests_per_minute": _rate(self.rpm), "tokens_per_minute": _rate(self.tpm)}
        given = {name: value for name, value in rates.items() if value is not None}
        return given or None

    def budget(self) -> dict[str, str] | None:
        amount = _amount(self.budget_usd)
        return None if amount is None else {"limit_usd": amount, "period": self.budget_period}

    def body(self, *, scopes: bool) -> dict[str, Any]:
        """The policy part of a create or PATCH body: every field, ``None`` where empty."""
        out: dict[str, Any] = {"rate_limits": self.rate_limits(), "budget": self.budget()}
        if scopes:
            out["allowed_models"] = list(dict.fromkeys(self.models)) or None
            out["allowed_endpoints"] = list(dict.fromkeys(self.endpoints)) or None
        return out


def model_choices(catalogue: Sequence[str], form: PolicyForm) -> list[str]:
    """The catalogue's models, and any the key already allows that it no longer lists (so
    that an edit does not drop them unseen)."""
    return [*catalogue, *(m for m in form.models if m not in catalogue)]


def count(value: int) -> str:
    """A rate in few characters, never rounded: 600, 100k, 1.5M, 12,345."""
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if value >= size and value % (size // 100) == 0:
            return f"{value / size:g}{suffix}"
    return f"{value:,}"


def summary(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A key's or project's limits but its budget, compactly: (text, the full version)."""
    out: list[tuple[str, str]] = []
    rates = item.get("rate_limits") or {}
    parts, full = [], []
    for name, unit, words in (
        ("requests_per_minute", "rpm", "requests per minute"),
        ("tokens_per_minute", "tpm", "tokens per minute"),
    ):
        if rates.get(name) is not None:
            parts.append(f"{count(int(rates[name]))} {unit}")
            full.append(f"{int(rates[name]):,} {words}")
    if parts:
        out.append((" · ".join(parts), ", ".join(full)))
    models = item.get("allowed_models")
    if models:
        out.append((f"models: {len(models)}", "Only " + ", ".join(models)))
    endpoints = item.get("allowed_endpoints")
    if endpoints:
        labels = ", ".join(SCOPE_LABELS.get(e, e) for e in endpoints)
        out.append((f"endpoints: {labels}", "Only " + ", ".join(endpoints)))
    return out


def error_field(param: str | None) -> str | None:
    """The form field a key service error is about, or None for the form as a whole."""
    return FIELD_OF_PARAM.get(param or "")
