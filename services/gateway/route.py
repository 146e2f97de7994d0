"""How each catalogue model's upstream is reached, built once at start.

Apart from the proxy because it is made once per model, not per request: the headers with
the upstream's credential, the parsed URL of each endpoint, the timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from yarl import URL

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
    urls: dict[Endpoint, URL]
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout

    @classmethod
    def of(cls, entry: ModelEntry) -> Route:
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        credential = entry.upstream.api_key()
        if credential:
            headers["authorization"] = f"Bearer {credential}"
        seconds = entry.upstream.timeout_s
        # No overall limit (a stream may last): waiting for a pooled connection and each read
        # (between chunks too) bounded by the model's timeout, a connect by at most 10 s.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=seconds, sock_connect=min(seconds, 10.0), sock_read=seconds
        )
        base_url = entry.upstream.base_url.rstrip("/")
        # Parsed once: yarl's URL parsing is a noticeable share of a request otherwise.
        urls = {e: URL(base_url + e.removeprefix("/v1"), encoded=True) for e in ENDPOINT_KINDS}
        return cls(entry, urls, headers, timeout)
