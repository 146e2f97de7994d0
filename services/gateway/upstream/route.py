"""How each catalogue model's upstream is reached, built once at start.

Apart from the proxy because it is made once per model, not per request: the headers with
the upstream's credential, each endpoint's request head, the timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.upstream.pool import Target, Timeouts
from shared.catalogue import ModelEntry
from shared.events import Endpoint

# The kinds of model each proxied endpoint serves.
ENDPOINT_KINDS: dict[Endpoint, tuple[str, ...]] = {
    "/v1/chat/completions": ("chat",),
    "/v1/responses": ("chat",),
    "/v1/completions": ("chat", "completion"),
    "/v1/embeddings": ("embedding",),
}


@dataclass(frozen=True)
class Route:
    """How one catalogue model is reached (headers built once, credential read once)."""

    entry: ModelEntry
    targets: dict[Endpoint, Target]
    timeouts: Timeouts

    @classmethod
    def of(cls, entry: ModelEntry) -> Route:
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        credential = entry.upstream.api_key()
        if credential:
            headers["authorization"] = f"Bearer {credential}"
        seconds = entry.upstream.timeout_s
        # No overall limit (a stream may last): waiting for a pooled connection and each read
        # (between chunks too) bounded by the model's timeout, a connect by at most 10 s.
        timeouts = Timeouts(pool_s=seconds, connect_s=min(seconds, 10.0), read_s=seconds)
        base_url = entry.upstream.base_url.rstrip("/")
        # Each request head built once: per request only its length and id are added.
        targets = {e: Target.of(base_url + e.removeprefix("/v1"), headers) for e in ENDPOINT_KINDS}
        return cls(entry, targets, timeouts)
