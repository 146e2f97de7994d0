"""The command line's policy flags: ``--rpm``, ``--tpm``, ``--budget``, ``--models``,
``--endpoints``, parsed into the API's body fields and summed up for the tables.

On ``update``, ``none`` removes a limit, and a flag left out leaves it as it is. ``--rpm``
and ``--tpm`` are the two halves of one ``rate_limits`` object, which a PATCH replaces
whole: when only one of them is given, the command reads the key (or project) first and
sends the other half as it was. Two operators changing the halves of the same key's limits
at the same moment may therefore undo one another's change (the last write wins).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from shared.policy import SCOPES, parse_usd

NONE = "none"
_PERIODS = ("day", "month", "total")
RATE_FLAGS = ("rpm", "tpm")
_RATE_FIELDS = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute"}


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def _budget(text: str) -> dict[str, str]:
    amount, slash, period = text.strip().partition("/")
    if not slash or period not in _PERIODS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write AMOUNT/PERIOD, PERIOD one of {', '.join(_PERIODS)} (25/month)"
        )
    amount = amount.strip().removeprefix("$")
    try:
        parse_usd(amount)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return {"limit_usd": amount, "period": period}


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name, comma-separated")
    return names


def _endpoints(text: str) -> list[str]:
    names = _names(text)
    unknown = [n for n in names if n not in SCOPES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown endpoint {unknown[0]!r}; endpoints: {', '.join(SCOPES)}"
        )
    return names


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parsed(text: str) -> Any:
        return None if text.strip().lower() == NONE else parse(text)

    parsed.__name__ = parse.__name__.strip("_")  # argparse names it in its error message
    return parsed


def add_policy_flags(
    command: argparse.ArgumentParser, *, removable: bool, scopes: bool = True
) -> None:
    """The policy flags, absent from the parsed arguments unless given; removable: each also
    takes ``none``."""
    wrap = _or_none if removable else (lambda parse: parse)
    tail = " ('none' removes it)" if removable else ""
    extra: dict[str, Any] = {"default": argparse.SUPPRESS}
    command.add_argument(
        "--rpm", type=wrap(_count), metavar="N", help=f"requests per minute{tail}", **extra
    )
    command.add_argument(
        "--tpm", type=wrap(_count), metavar="N", help=f"tokens per minute{tail}", **extra
    )
    command.add_argument(
        "--budget",
        type=wrap(_budget),
        metavar="USD/PERIOD",
        help=f"spend budget, PERIOD day, month or total, such as 25/month{tail}",
        **extra,
    )
    if scopes:
        command.add_argument(
            "--models",
            type=wrap(_names),
            metavar="A,B",
            help=f"the only models the key may use (catalogue ids){tail}",
            **extra,
        )
        command.add_argument(
            "--endpoints",
            type=wrap(_endpoints),
            metavar="A,B",
            help=f"the only endpoints the key may call: {', '.join(SCOPES)}{tail}",
            **extra,
        )


def given(args: argparse.Namespace, flag: str) -> bool:
    """True when the flag was on the command line (the flags are absent otherwise)."""
    return flag in vars(args)


def policy_body(args: argparse.Namespace, current: dict[str, Any] | None) -> dict[str, Any]:
    """The body fields the flags ask for; current: the key or project, read when only one of
    --rpm and --tpm is given, whose other half is then kept."""
    body: dict[str, Any] = {}
    rates = [f for f in RATE_FLAGS if given(args, f)]
    if rates:
        kept = dict((current or {}).get("rate_limits") or {})
        limits = {_RATE_FIELDS[f]: kept.get(_RATE_FIELDS[f]) for f in RATE_FLAGS}
        limits |= {_RATE_FIELDS[f]: getattr(args, f) for f in rates}
        limits = {k: v for k, v in limits.items() if v is not None}
        body["rate_limits"] = limits or None
    for flag, field in (
        ("budget", "budget"),
        ("models", "allowed_models"),
        ("endpoints", "allowed_endpoints"),
    ):
        if given(args, flag):
            body[field] = getattr(args, flag)
    return body


def needs_current(args: argparse.Namespace) -> bool:
    """True when exactly one of --rpm and --tpm is given: the other half must be read."""
    return sum(given(args, f) for f in RATE_FLAGS) == 1


def summary(item: dict[str, Any]) -> str:
    """A key's or project's policy in one cell: ``rpm=600 tpm=100000 budget=25.00/month``."""
    limits = item.get("rate_limits") or {}
    parts = [
        f"{flag}={limits[_RATE_FIELDS[flag]]}"
        for flag in RATE_FLAGS
        if limits.get(_RATE_FIELDS[flag]) is not None
    ]
    if budget := item.get("budget"):
        parts.append(f"budget={budget['limit_usd']}/{budget['period']}")
    if models := item.get("allowed_models"):
        parts.append(f"models={','.join(models)}")
    if endpoints := item.get("allowed_endpoints"):
        parts.append(f"endpoints={','.join(endpoints)}")
    return " ".join(parts) or "-"
