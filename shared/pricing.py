"""The one pricing function: what a request's tokens cost at the catalogue's price in force.

Billing prices every usage event with it into the cost ledger; the gateway prices budget
reservations and settlements with it, so a budget counts exactly what the Costs API will show.
Arithmetic is exact ``Decimal`` in an explicit context (an ``Inexact`` trap proves nothing
is rounded); amounts are held to 18 places, as the ledger's ``numeric(38, 18)``.

Input tokens include the cached ones; those are billed at the cached price when the model
has one, else at the input price.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import NamedTuple

from shared.catalogue import Price

# Pricing context: wide enough that tokens x price is exact; any rounding would raise.
EXACT = Context(prec=60, rounding=ROUND_HALF_UP, traps=[Inexact, InvalidOperation, Overflow])
MILLION = Decimal(1_000_000)
LEDGER_QUANTUM = Decimal("1e-18")  # numeric(38, 18) in billing's cost_day


def cost(tokens: int, price_per_million: Decimal) -> Decimal:
    """Exact cost of tokens at a price per million; raises Inexact if the ledger can't hold it."""
    amount = EXACT.divide(EXACT.multiply(Decimal(tokens), price_per_million), MILLION)
    return amount.quantize(LEDGER_QUANTUM, context=EXACT)


class CostLine(NamedTuple):
    """One line item of one request: its tokens and the price per million they are billed at."""

    line_item: str
    tokens: int
    per_million: Decimal

    @property
    def amount(self) -> Decimal:
        """The exact cost of this line alone."""
        return cost(self.tokens, self.per_million)


def cost_lines(
    price: Price, *, input_tokens: int, cached_input_tokens: int, output_tokens: int
) -> tuple[CostLine, ...]:
    """The line items of a request's tokens (``input``, ``cached input``, ``output``), the
    empty ones left out. ``cached_input_tokens`` is the part of ``input_tokens`` cached."""
    cached_price = price.cached_input_per_million
    if cached_price is None:
        cached_price = price.input_per_million
    wanted = (
        ("input", input_tokens - cached_input_tokens, price.input_per_million),
        ("cached input", cached_input_tokens, cached_price),
        ("output", output_tokens, price.output_per_million),
    )
    return tuple(CostLine(n, t, p) for n, t, p in wanted if t > 0)


def total(lines: tuple[CostLine, ...]) -> Decimal:
    """The exact sum of the lines' costs."""
    amount = Decimal(0)
    for line in lines:
        amount = EXACT.add(amount, line.amount)
    return amount


def request_cost(
    price: Price, *, input_tokens: int, cached_input_tokens: int = 0, output_tokens: int = 0
) -> Decimal:
    """What one request's tokens cost, exactly as billing will price them."""
    return total(
        cost_lines(
            price,
            input_tokens=input_tokens,
            cached_input_tokens=cached_input_tokens,
            output_tokens=output_tokens,
        )
    )
