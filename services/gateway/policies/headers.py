"""OpenAI's rate-limit headers and its duration format (``1s``, ``6m0s``, ``20ms``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.gateway.policies.counters import RateState


def duration(ms: int) -> str:
    """A wait as OpenAI writes it: ``20ms`` under a second, else ``1s``, ``6m0s``, ``1h2m3s``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def rate_headers(states: Sequence[RateState]) -> list[tuple[bytes, bytes]]:
    """The ``x-ratelimit-*`` headers: per kind (requests, tokens), the binding limit (the one
    with least left, key or project) with what remains and when it is whole again."""
    headers: list[tuple[bytes, bytes]] = []
    for kind in ("requests", "tokens"):
        of_kind = [s for s in states if s.check.kind == kind]
        if not of_kind:
            continue
        binding = min(of_kind, key=lambda s: (s.remaining, -s.reset_ms))
        headers += [
            (f"x-ratelimit-limit-{kind}".encode(), str(binding.check.limit).encode()),
            (f"x-ratelimit-remaining-{kind}".encode(), str(binding.remaining).encode()),
            (f"x-ratelimit-reset-{kind}".encode(), duration(binding.reset_ms).encode()),
        ]
    return headers
