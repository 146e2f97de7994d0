"""The limit forms' conversions, the compact summaries, budget periods and the budget line on
a chart, as pure functions."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from services.console.budgets import period_start
from services.console.charts import Series, bar_chart, dollars
from services.console.policies import PolicyForm, count, error_field, model_choices, summary

pytestmark = pytest.mark.unit  # no server: `make test-unit`

NOW = datetime(2026, 11, 27, 14, 37, 12, tzinfo=UTC)


def test_a_form_becomes_the_apis_json_and_empty_means_none() -> None:
    form = PolicyForm(
        rpm=" 600 ",
        tpm="100,000",
        budget_usd="$25.00",
        budget_period="month",
        models=["m", "m"],
        endpoints=["models"],
    )
    assert form.body(scopes=True) == {
        "rate_limits": {"requests_per_minute": 600, "tokens_per_minute": 100_000},
        "budget": {"limit_usd": "25.00", "period": "month"},  # the string typed, no float
        "allowed_models": ["m"],
        "allowed_endpoints": ["models"],
    }
    assert PolicyForm(budget_period="day").body(scopes=True) == dict.fromkeys(
        ("rate_limits", "budget", "allowed_models", "allowed_endpoints")
    )
    assert PolicyForm().body(scopes=False) == {"rate_limits": None, "budget": None}
    # Not a whole number: sent as typed, so the key service's refusal names it.
    assert PolicyForm(rpm="1.5", tpm="-3").rate_limits() == {
        "requests_per_minute": "1.5",
        "tokens_per_minute": "-3",
    }


def test_a_form_filled_from_a_key_round_trips() -> None:
    key = {
        "rate_limits": {"requests_per_minute": 60, "tokens_per_minute": None},
        "budget": {"limit_usd": "2.50", "period": "total"},
        "allowed_models": ["gone-from-catalogue"],
        "allowed_endpoints": None,
    }
    form = PolicyForm.of(key)
    assert (form.rpm, form.tpm, form.budget_usd, form.budget_period) == ("60", "", "2.50", "total")
    assert form.body(scopes=True) == {
        "rate_limits": {"requests_per_minute": 60},
        "budget": {"limit_usd": "2.50", "period": "total"},
        "allowed_models": ["gone-from-catalogue"],
        "allowed_endpoints": None,
    }
    assert model_choices(("a", "b"), form) == ["a", "b", "gone-from-catalogue"]


def test_limits_read_compactly_and_never_rounded() -> None:
    assert [count(n) for n in (600, 1000, 1500, 100_000, 2_500_000, 1234, 3 * 10**9)] == [
        "600",
        "1k",
        "1.5k",
        "100k",
        "2.5M",
        "1,234",
        "3B",
    ]
    key = {
        "rate_limits": {"requests_per_minute": 600, "tokens_per_minute": 100_000},
        "allowed_models": ["a"],
        "allowed_endpoints": ["chat.completions", "models"],
    }
    assert [text for text, _ in summary(key)] == [
        "600 rpm · 100k tpm",
        "models: 1",
        "endpoints: chat, models",
    ]
    assert summary({"rate_limits": None}) == []
    assert error_field("budget.limit_usd") == "budget_usd"
    assert error_field(None) is None


def test_budget_periods_start_at_utc_midnight_the_first_or_zero() -> None:
    assert period_start("day", NOW) == datetime(2026, 11, 27, tzinfo=UTC)
    assert period_start("month", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert period_start("total", NOW).timestamp() == 0


def test_a_budget_is_a_dashed_line_within_the_chart() -> None:
    chart = str(
        bar_chart(
            title="Cost",
            description="d",
            labels=["a", "b"],
            series=[Series("Cost", "cost", [0.1, 0.2])],
            fmt=dollars,
            limit=(5.0, "Budget $5.00 a day"),
        )
    )
    line = re.search(r'<line class="limit-line" [^>]*y1="([0-9.]+)"', chart)
    assert line
    assert 0 <= float(line.group(1)) < 240
    assert "Budget $5.00 a day" in chart
    assert ">$5<" in chart  # the axis grew to hold the budget
