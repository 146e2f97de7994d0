"""A streamed answer passed on to the client: the upstream's server-sent events as they come.

Apart from the proxy because it runs after the proxy returned the response, for as long as
the stream lasts: events are split at their blank lines so that the meter sees each whole
event (and may hold back the usage chunk the client did not ask for), and the upstream's
connection is given back or closed when the stream ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from services.gateway.upstream.client import UpstreamConnectionError
from services.gateway.upstream.pool import UpstreamResponse
from services.gateway.usage.meter import StreamMeter

# Every log line of a proxied request comes from the proxy's logger: one name to filter on.
log = logging.getLogger("services.gateway.proxy")


async def relay_events(
    upstream: UpstreamResponse, meter: StreamMeter, outcome: dict[str, int], model: str
) -> AsyncIterator[bytes]:
    """The upstream's events that the meter lets through, joined per read; a break of the
    upstream sets ``outcome["status"]`` to 502 (the client sees a cut stream)."""
    buffer = b""
    try:
        async for piece in upstream.iter_chunks():
            buffer += piece
            if b"\r" in buffer:
                buffer = buffer.replace(b"\r\n", b"\n")
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                continue  # no whole event yet
            events, buffer = buffer[: cut + 2], buffer[cut + 2 :]
            out = meter.feed_events(events)
            if out:
                yield out
        if buffer.strip() and meter.feed(buffer):
            yield buffer
    except (UpstreamConnectionError, TimeoutError) as exc:
        # Headers are sent already: the client sees a cut stream; the event says 502.
        log.warning("upstream stream of %s broke: %s", model, type(exc).__name__)
        outcome["status"] = 502


def close_upstream(upstream: UpstreamResponse) -> None:
    """A stream read to its end gives its connection back to the pool; one cut short (client
    gone) closes the connection, which tells the upstream to stop generating."""
    if upstream.at_eof():
        upstream.release()
    else:
        upstream.close()
