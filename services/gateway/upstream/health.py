"""What the fleets learn off the request path: probes, the servers' queues, DNS answers.

``FleetKeeper.run`` (a gateway worker) looks at every fleet of the current routes each tick and
starts, at most one at a time per endpoint and kind:

- the probe of an ejected endpoint whose back-off ended: ``GET`` its ``health.path`` (from the
  server's root), or its base URL's ``/models``; a 2xx returns it, anything else ejects it
  again for longer;
- with ``health.interval_s``, the same probe of every healthy endpoint that often: a failure
  ejects it at once (passive health only sees failures when requests fail);
- with ``balance: server_queue``, a read of each endpoint's ``server_queue.path`` (Prometheus
  text): vLLM's ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (SGLang's
  ``sglang:num_running_reqs`` and ``sglang:num_queue_reqs``), summed over the server's models,
  and its KV-cache use;
- for a ``dns`` upstream, a resolution of the name every ``interval_s``: its addresses are the
  endpoints (one gone finishes its requests; a failed resolution keeps the last ones).

Probes and reads go through their own httpx client, bounded in time and size: an endpoint that
hangs or answers without end delays neither requests nor the other endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from time import monotonic
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.gateway.upstream.fleet import Fleet, Replica

log = logging.getLogger(__name__)

# The most of a probe's or a queue read's answer that is read.
ANSWER_MAX_BYTES = 1 << 20
RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_addresses(name: str, port: int) -> list[str]:
    """The name's addresses, sorted (IPv4 and IPv6), as the system's resolver gives them."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def read_queue(text: str) -> tuple[float, float] | None:
    """Requests running plus waiting, and the KV cache's use (0 to 1), from a server's
    Prometheus text; None when it reports no queue."""
    queued, kv_cache, found = 0.0, 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name, rest = line[:brace], line[line.rfind("}") + 1 :]
        else:
            name, rest = line[:space], line[space:]
        if name not in RUNNING and name not in WAITING and name not in KV_CACHE:
            continue
        try:
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        if not math.isfinite(value) or value < 0:
            continue
        if name in KV_CACHE:
            kv_cache = max(kv_cache, min(value, 1.0))
        else:
            queued += value
            found = True
    return (queued, kv_cache) if found else None


def origin_of(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def address_url(scheme: str, address: str, port: int, path: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}{path}"


class FleetKeeper:
    """Probes, queue reads and DNS resolutions for the fleets ``fleets()`` gives."""

    def __init__(
        self,
        fleets: Callable[[], Iterable[Fleet]],
        *,
        tick_s: float = 0.1,
        resolver: Resolver = resolve_addresses,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.fleets = fleets
        self.tick_s = tick_s
        self.resolver = resolver
        self.client = client or httpx.AsyncClient(
            follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._next: dict[tuple[int, str], float] = {}  # (id of a replica or fleet, kind): when
        self._busy: set[tuple[int, str]] = set()
        self.resolve_failures = 0

    async def run(self) -> None:
        """Tick until cancelled."""
        try:
            while True:
                self.tick(monotonic())
                await asyncio.sleep(self.tick_s)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def prime(self, timeout_s: float = 5.0) -> None:
        """Resolve every ``dns`` fleet once, before the gateway takes requests."""
        fleets = [f for f in self.fleets() if f.upstream.dns is not None]
        if fleets:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(self._resolve(f) for f in fleets))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.client.aclose()

    def tick(self, now: float) -> None:
        """Start what is due."""
        alive: set[int] = set()
        for fleet in self.fleets():
            alive.add(id(fleet))
            upstream = fleet.upstream
            for replica in fleet.due_to_return(now):
                replica.probing = True
                self._spawn(self._return(fleet, replica))
            if upstream.dns is not None and self._due(
                (id(fleet), "dns"), now, upstream.dns.interval_s
            ):
                self._start((id(fleet), "dns"), self._resolve(fleet))
            for replica in fleet.replicas:
                alive.add(id(replica))
                interval = upstream.health.interval_s
                if interval is not None and replica.healthy:
                    key = (id(replica), "probe")
                    if self._due(key, now, interval):
                        self._start(key, self._check(fleet, replica))
                if upstream.balance == "server_queue":
                    key = (id(replica), "queue")
                    if self._due(key, now, upstream.server_queue.interval_s):
                        self._start(key, self._read_queue(fleet, replica))
        # Schedules of fleets and endpoints gone with a reload or a resolution.
        for key in [k for k in self._next if k[0] not in alive]:
            del self._next[key]

    def _due(self, key: tuple[int, str], now: float, interval_s: float) -> bool:
        if key in self._busy or now < self._next.get(key, 0.0):
            return False
        self._next[key] = now + interval_s
        return True

    def _start(self, key: tuple[int, str], work: Coroutine[Any, Any, None]) -> None:
        self._busy.add(key)

        async def run() -> None:
            try:
                await work
            finally:
                self._busy.discard(key)

        self._spawn(run())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _return(self, fleet: Fleet, replica: Replica) -> None:
        passed = False
        try:
            passed = await self._probe(fleet, replica)
        finally:
            fleet.probed(replica, passed)
        if passed:
            log.info("upstream %s of %s is back", replica.name, fleet.model)
        else:
            log.warning(
                "upstream %s of %s failed its probe; out for %.1f s more",
                replica.name,
                fleet.model,
                max(0.0, replica.ejected_until - monotonic()),
            )

    async def _check(self, fleet: Fleet, replica: Replica) -> None:
        if not await self._probe(fleet, replica) and replica.healthy:
            log.warning("upstream %s of %s failed its health check", replica.name, fleet.model)
            fleet.failed(replica, "probe")

    async def _probe(self, fleet: Fleet, replica: Replica) -> bool:
        health = fleet.upstream.health
        if health.path is not None:
            url = origin_of(replica.name) + health.path
        else:
            url = replica.name + "/models"
        status, _ = await self._get(fleet, replica, url, health.timeout_s)
        return 200 <= status < 300

    async def _read_queue(self, fleet: Fleet, replica: Replica) -> None:
        settings = fleet.upstream.server_queue
        url = origin_of(replica.name) + settings.path
        status, body = await self._get(fleet, replica, url, max(settings.interval_s, 0.5))
        if not 200 <= status < 300:
            return
        found = read_queue(body.decode("utf-8", "replace"))
        if found is not None:
            replica.queue, replica.kv_cache = found
            replica.scraped_at = monotonic()
            replica.sent_since_scrape = 0

    async def _get(
        self, fleet: Fleet, replica: Replica, url: str, timeout_s: float
    ) -> tuple[int, bytes]:
        """A GET's status and (at most ``ANSWER_MAX_BYTES`` of) its body; status 0 when it
        failed."""
        headers = {"user-agent": "tollgate-gateway"}
        if "authorization" in fleet.headers:
            headers["authorization"] = fleet.headers["authorization"]
        host = urlsplit(url).hostname
        extensions: dict[str, Any] = {}
        if replica.server_name != host:  # an address of a DNS name: its TLS name and Host
            headers["host"] = replica.server_name
            extensions["sni_hostname"] = replica.server_name
        try:
            async with asyncio.timeout(timeout_s):
                request = self.client.build_request(
                    "GET", url, headers=headers, extensions=extensions, timeout=timeout_s
                )
                response = await self.client.send(request, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) >= ANSWER_MAX_BYTES:
                            break
                    return response.status_code, bytes(body[:ANSWER_MAX_BYTES])
                finally:
                    await response.aclose()
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            log.debug("GET %s failed: %s", url, type(exc).__name__)
            return 0, b""

    async def _resolve(self, fleet: Fleet) -> None:
        dns = fleet.upstream.dns
        assert dns is not None
        try:
            addresses = await self.resolver(dns.name, dns.port)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            self.resolve_failures += 1
            log.warning(
                "could not resolve %s for %s (%s); keeping its %d endpoints",
                dns.name,
                fleet.model,
                exc,
                len(fleet.replicas),
            )
            return
        if not addresses:
            self.resolve_failures += 1
            log.warning("%s resolved to no address; keeping its endpoints", dns.name)
            return
        fleet.place(
            (address_url(dns.scheme, a, dns.port, dns.path), 1.0, dns.name) for a in addresses
        )
