"""How each catalogue model's upstream is reached, built once per catalogue (at start and at
each reload).

Apart from the proxy because it is made once per model, not per request: the headers with the
upstream's credential, the fleet of endpoints with each one's request heads, the timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.upstream.fleet import Fleet
from services.gateway.upstream.pool import Timeouts
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
    fleet: Fleet
    timeouts: Timeouts

    @classmethod
    def of(cls, entry: ModelEntry, previous: Route | None = None) -> Route:
        """The model's route; an endpoint ``previous`` (the same model before a reload) had
        keeps its load and health."""
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        credential = entry.upstream.api_key()
        if credential:
            headers["authorization"] = f"Bearer {credential}"
        seconds = entry.upstream.timeout_s
        # No overall limit (a stream may last): waiting for a pooled connection and each read
        # (between chunks too) bounded by the model's timeout, a connect by at most 10 s.
        timeouts = Timeouts(pool_s=seconds, connect_s=min(seconds, 10.0), read_s=seconds)
        before = previous.fleet.replicas if previous is not None else ()
        fleet = Fleet(entry.id, entry.upstream, headers, reuse=before)
        dns = entry.upstream.dns
        if previous is not None and dns is not None and previous.entry.upstream.dns == dns:
            # The same name: its addresses stay until the next resolution says otherwise.
            fleet.place(((r.name, r.weight, r.server_name) for r in before), reuse=before)
        return cls(entry, fleet, timeouts)


def routes_of(
    entries: tuple[ModelEntry, ...], previous: dict[str, Route] | None = None
) -> dict[str, Route]:
    """Every model's route, by catalogue id."""
    before = previous or {}
    return {entry.id: Route.of(entry, before.get(entry.id)) for entry in entries}
