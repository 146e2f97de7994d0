"""Money rules: exact Decimal arithmetic, and the one place amounts are rounded.

Every event's cost is computed exactly (an Inexact trap proves it) and stored exactly.
Amounts are rounded only when a total is shown or invoiced: to the cent, half-up
(0.005 -> 0.01), never the default half-even, and only after summing the exact amounts.
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, Overflow
from typing import Any

# Display context: half-up, for the one rounding to cents.
DISPLAY = Context(prec=60, rounding=ROUND_HALF_UP, traps=[InvalidOperation, Overflow])
CENT = Decimal("0.01")
# The pricing itself is shared with the gateway's budgets: shared/pricing.py.


def to_cents(amount: Decimal) -> Decimal:
    """A shown or invoiced total: rounded half-up to the cent."""
    return amount.quantize(CENT, context=DISPLAY)


def plain(amount: Decimal) -> str:
    """An amount as plain decimal text, without trailing zeros or exponent."""
    text = format(amount.normalize(DISPLAY), "f")
    return "0" if text in ("-0", "0") else text


def dumps_exact(value: Any) -> bytes:
    """JSON in which a Decimal is written as an exact number literal, never through float."""
    return _encode(value).encode()


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}:{_encode(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)
