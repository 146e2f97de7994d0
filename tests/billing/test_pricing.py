"""Pricing and money rules on their own: effective dates, cached input, exactness, rounding."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.billing.money import dumps_exact, plain, to_cents
from services.billing.service import Pricer, cost_deltas
from shared.catalogue import load_catalogue
from shared.exactly_once.consumer import Poison
from shared.pricing import cost
from tests.metering.harness import CHAT, EMBED, PRICE_CHANGE, UNPRICED, usage

pytestmark = pytest.mark.unit  # no server: `make test-unit`


@pytest.fixture
def pricer(catalogue_path: Path) -> Pricer:
    return Pricer(load_catalogue(catalogue_path))


def lines(pricer: Pricer, **kw: object) -> dict[str, tuple[int, Decimal]]:
    priced = pricer(usage(**kw).to_bytes())  # type: ignore[arg-type]
    return {line.line_item: (line.tokens, line.amount) for line in priced.lines}


def test_a_price_the_ledger_cannot_hold_exactly_is_refused_at_start(catalogue_path: Path) -> None:
    text = catalogue_path.read_text().replace('"0.020"', '"0.0000000000001"')
    catalogue_path.write_text(text)
    with pytest.raises(ArithmeticError):
        Pricer(load_catalogue(catalogue_path))


def test_event_priced_at_the_price_in_force_at_its_occurred_at(pricer: Pricer) -> None:
    before = PRICE_CHANGE - timedelta(microseconds=1)
    got = lines(pricer, at=before, input_tokens=1000, cached=400, output_tokens=10)
    assert got == {
        "input": (600, Decimal("0.00009")),  # 600 x 0.150 / 1e6
        "cached input": (400, Decimal("0.00003")),  # 400 x 0.075 / 1e6
        "output": (10, Decimal("0.000006")),  # 10 x 0.600 / 1e6
    }
    # From the change on, no cached price: cached input is billed at the input price.
    got = lines(pricer, at=PRICE_CHANGE, input_tokens=1000, cached=400, output_tokens=10)
    assert got == {
        "input": (600, Decimal("0.00012")),
        "cached input": (400, Decimal("0.00008")),
        "output": (10, Decimal("0.000008")),
    }


def test_unknown_model_and_time_before_any_price_are_poison(pricer: Pricer) -> None:
    with pytest.raises(Poison, match="unknown model 'nope'"):
        pricer(usage(model="nope").to_bytes())
    with pytest.raises(Poison, match="no price"):
        pricer(usage(model=UNPRICED).to_bytes())
    negative = {**usage().model_dump(mode="json"), "input_tokens": -1}
    with pytest.raises(Poison, match="input_tokens: Input should be greater than or equal to 0"):
        pricer(json.dumps(negative).encode())
    with pytest.raises(Poison, match=r"invalid usage event: .*Field required.*\(and \d+ more\)"):
        pricer(b'{"input_tokens": 1}')


def test_a_request_that_used_no_tokens_costs_nothing_whatever_its_model(pricer: Pricer) -> None:
    # The gateway records refused requests (unknown model, bad JSON) with no tokens.
    for model in ("nope", "", UNPRICED):
        refused = pricer(usage(model=model, input_tokens=0, output_tokens=0, status=404).to_bytes())
        assert refused.lines == ()
    assert cost_deltas([refused]) == {}
    with pytest.raises(Poison, match="unknown model"):
        pricer(usage(model="nope", input_tokens=1, output_tokens=0).to_bytes())


def test_costs_are_exact_or_refused() -> None:
    assert cost(3, Decimal("0.333")) == Decimal("0.000000999")
    assert cost(1, Decimal("0.000001")) == Decimal("1e-12")
    # One token at a price needing 19 decimals after /1e6: the ledger can't hold it exactly.
    with pytest.raises(ArithmeticError):
        cost(1, Decimal("0.0000000000001"))


def test_totals_round_half_up_to_cents_only_when_shown() -> None:
    assert to_cents(Decimal("0.005")) == Decimal("0.01")
    assert to_cents(Decimal("0.025")) == Decimal("0.03")  # half-even would give 0.02
    assert to_cents(Decimal("0.0249999999")) == Decimal("0.02")
    # Many tiny exact amounts summed first, rounded once: 3000 x 0.000005 = 0.015 -> 0.02.
    assert to_cents(sum([Decimal("0.000005")] * 3000, Decimal(0))) == Decimal("0.02")


def test_amounts_are_written_as_exact_json_numbers() -> None:
    body = {"amount": {"value": Decimal("0.000000999000000000"), "currency": "usd"}, "n": [1]}
    text = dumps_exact(body).decode()
    assert text == '{"amount":{"value":0.000000999,"currency":"usd"},"n":[1]}'
    assert json.loads(text, parse_float=Decimal)["amount"]["value"] == Decimal("0.000000999")
    assert plain(Decimal("1E+3")) == "1000"
    assert plain(Decimal("0E-18")) == "0"


def test_a_batch_sums_per_utc_day_and_line(pricer: Pricer) -> None:
    events = [
        pricer(usage(model=EMBED, at=PRICE_CHANGE, input_tokens=n).to_bytes()) for n in (1, 2)
    ]
    events.append(pricer(usage(model=CHAT, at=PRICE_CHANGE, input_tokens=5).to_bytes()))
    deltas = cost_deltas(events)
    day = PRICE_CHANGE.date()
    assert deltas[("proj_a", day, "key_1", EMBED, "input")] == (3, Decimal("0.00000006"))
    assert deltas[("proj_a", day, "key_1", CHAT, "input")] == (5, Decimal("0.000001"))
