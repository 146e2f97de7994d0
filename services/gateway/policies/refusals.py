"""The words of a refusal: a verdict the admit script did not pass, as OpenAI's 429.

Apart from the gate because it is only text: which limit of whom (the key or its project),
the figures behind the verdict, when to retry. The gate decides; this says why.
"""

from __future__ import annotations

import math

from services.gateway.errors import QuotaExceeded, RateLimited
from services.gateway.policies.counters import (
    ADMITTED,
    OVER_BUDGET,
    OVER_RATE,
    TOO_LARGE,
    Verdict,
)
from services.gateway.policies.headers import duration
from services.gateway.policies.plan import Plan, from_nano


def _who(holder: str) -> str:
    return "this API key" if holder == "key" else "this project"


def refuse_unless_admitted(verdict: Verdict, plan: Plan) -> None:
    """Return when the verdict admitted the request; else raise RateLimited (with its
    retry-after) or QuotaExceeded, naming the limit that was reached."""
    if verdict.outcome == ADMITTED:
        return
    if verdict.outcome in (OVER_RATE, TOO_LARGE):
        rate = plan.rates[verdict.which]
        unit = "requests per min (RPM)" if rate.kind == "requests" else "tokens per min (TPM)"
        if verdict.outcome == TOO_LARGE:
            raise RateLimited(
                f"Request too large for {unit} of {_who(rate.holder)}: limit {rate.limit},"
                f" requested {rate.amount}.",
                rate.kind,
                60,
            )
        used = rate.limit - verdict.rates[verdict.which].remaining
        raise RateLimited(
            f"Rate limit reached for {unit} of {_who(rate.holder)}: limit {rate.limit},"
            f" used {used}, requested {rate.amount}. Please try again in"
            f" {duration(verdict.retry_ms)}.",
            rate.kind,
            max(1, math.ceil(verdict.retry_ms / 1000)),
        )
    if verdict.outcome == OVER_BUDGET:
        budget = plan.budgets[verdict.which]
        held = verdict.budgets[verdict.which]
        period = "total" if budget.budget.period == "total" else f"{budget.budget.period}ly"
        raise QuotaExceeded(
            f"You exceeded your current quota: the {period} budget of {_who(budget.holder)}"
            f" is ${budget.budget.limit_usd}; ${from_nano(held.spent):.6f} is spent and"
            f" ${from_nano(held.reserved):.6f} held by requests in flight, and this request"
            f" may cost up to ${from_nano(budget.amount):.6f}."
        )
    raise RuntimeError(f"unexpected admit outcome {verdict.outcome}")
