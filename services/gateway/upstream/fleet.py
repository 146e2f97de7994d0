"""A model's servers: which one takes the next request, and which are out for now.

A ``Fleet`` holds one ``Replica`` per endpoint (one for a plain ``base_url``). ``pick`` chooses
among the healthy ones:

- ``least_inflight`` (the default): two endpoints drawn at random by weight, the one with fewer
  requests in flight from this gateway per unit of weight wins, a tie by a coin weighted by
  the two weights (power of two choices: close to the best pick, without the herd that always
  picking the least loaded makes; the most loaded endpoint is never picked);
- ``server_queue``: the same draw, each endpoint scored by its own server's queue (requests
  running and waiting, as vLLM and SGLang report them, read by ``upstream/health.py``) plus what
  this gateway sent it since; an endpoint whose KV cache is full is picked only if all are;
- ``affinity: key_prefix``: a request whose key and first messages hash alike goes to the same
  endpoint (rendezvous hashing, so adding an endpoint moves only its share), for the server's
  prefix cache, unless that endpoint is overloaded (its load above half again the fleet's mean
  plus two requests), when the draw above decides.

Passive health: ``after_failures`` failures in a row (a refused connection, a timeout, an
answer cut off, a 5xx or a 429) eject an endpoint for a back-off that doubles with each
ejection; when it ends the endpoint is probed (``upstream/health.py``) and returns only if the
probe passes. A failed active probe ejects it at once. Everything here runs on the event loop's
thread: no locks.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections.abc import Iterable, Sequence
from hashlib import blake2b
from time import monotonic
from typing import Literal

from services.gateway.upstream.pool import Target
from shared.catalogue import Upstream
from shared.events import Endpoint

# The upstream path of each proxied endpoint, below the base URL.
PROXIED: tuple[Endpoint, ...] = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# A server whose KV cache is this full queues what it is sent.
KV_CACHE_FULL = 0.95
# A scrape older than this many intervals is not trusted: the endpoint is scored by in-flight.
SCRAPE_STALE_INTERVALS = 3
Failure = Literal["connect", "timeout", "broken", "status_5xx", "status_429", "probe"]
FAILURES: tuple[Failure, ...] = (
    "connect",
    "timeout",
    "broken",
    "status_5xx",
    "status_429",
    "probe",
)
_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


class Replica:
    """One endpoint of a fleet: where it is, its load, its health and its figures."""

    def __init__(
        self, name: str, weight: float, targets: dict[Endpoint, Target], server_name: str
    ) -> None:
        self.name = name  # the base URL: the usage event's upstream_endpoint, a metric label
        self.weight = weight
        self.targets = targets
        self.server_name = server_name  # the TLS name and Host of a DNS fleet's address
        self.salt = int.from_bytes(blake2b(name.encode(), digest_size=8).digest(), "big")
        self.in_flight = 0
        self.failures = 0  # in a row
        self.ejections = 0  # in a row: each doubles the next back-off
        self.ejected_until = 0.0  # while ejected: when it may be probed to return
        self.ejected = False
        self.probing = False  # a probe to return it is under way
        self.returned_at = 0.0
        # The server's own queue (server_queue), when last read.
        self.queue = 0.0
        self.kv_cache = 0.0
        self.scraped_at = -math.inf
        self.sent_since_scrape = 0
        # Figures for /metrics.
        self.requests = 0
        self.errors = dict.fromkeys(FAILURES, 0)
        self.ejected_total = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def end(self) -> None:
        """Its request's answer is done with (read, relayed, or given up)."""
        self.in_flight -= 1

    @property
    def healthy(self) -> bool:
        return not self.ejected

    def observe(self, seconds: float) -> None:
        self.latency_counts[bisect(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


def build_targets(
    base_url: str, headers: dict[str, str], server_name: str | None = None
) -> dict[Endpoint, Target]:
    """Each proxied endpoint's request head below ``base_url``, built once."""
    base = base_url.rstrip("/")
    return {e: Target.of(base + e.removeprefix("/v1"), headers, server_name) for e in PROXIED}


class Fleet:
    """The endpoints of one model and the choice among them."""

    def __init__(
        self,
        model: str,
        upstream: Upstream,
        headers: dict[str, str],
        *,
        reuse: Sequence[Replica] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.model = model
        self.upstream = upstream
        self.headers = headers
        self.balance = upstream.balance
        self.affinity = upstream.affinity != "none"
        self.ejection = upstream.ejection
        self.scrape_stale_s = upstream.server_queue.interval_s * SCRAPE_STALE_INTERVALS
        self._rng = rng or random.Random()
        self.replicas: tuple[Replica, ...] = ()
        self._healthy: tuple[Replica, ...] = ()
        self._bounds: list[float] = []  # cumulative weights of the healthy ones
        self._single: Replica | None = None  # the one healthy endpoint, if only one
        self.place(((e.base_url, e.weight, None) for e in upstream.fixed_endpoints()), reuse)

    # Membership

    def place(
        self, endpoints: Iterable[tuple[str, float, str | None]], reuse: Sequence[Replica] = ()
    ) -> None:
        """Set the endpoints (base URL, weight, TLS name): one already here (or in ``reuse``,
        a reloaded catalogue's previous fleet) with the same head keeps its load and health;
        requests in flight on one removed finish where they are."""
        known = {r.name: r for r in (*self.replicas, *reuse)}
        placed = []
        for base_url, weight, server_name in endpoints:
            name = base_url.rstrip("/")
            targets = build_targets(name, self.headers, server_name)
            replica = known.get(name)
            if replica is None or replica.targets != targets:
                host = targets[PROXIED[0]].name
                replica = Replica(name, weight, targets, host)
            replica.weight = weight
            placed.append(replica)
        self.replicas = tuple(placed)
        self._refresh()

    def _refresh(self) -> None:
        self._healthy = tuple(r for r in self.replicas if not r.ejected)
        total, self._bounds = 0.0, []
        for replica in self._healthy:
            total += replica.weight
            self._bounds.append(total)
        self._single = self._healthy[0] if len(self._healthy) == 1 else None

    @property
    def healthy(self) -> tuple[Replica, ...]:
        return self._healthy

    def retry_after_s(self, now: float | None = None) -> int:
        """Seconds until the first ejected endpoint may return (at least one)."""
        now = monotonic() if now is None else now
        waits = [r.ejected_until - now for r in self.replicas if r.ejected]
        return max(1, math.ceil(min(waits, default=1.0)))

    # The choice

    def pick(self, tried: Sequence[Replica] = (), affinity: int | None = None) -> Replica | None:
        """The endpoint for the next attempt: a healthy one not ``tried`` if there is one, else
        a healthy one again (a fleet of one retries where it is); None when none is healthy."""
        single = self._single
        if single is not None:
            return single
        healthy = self._healthy
        if not healthy:
            return None
        if tried:
            untried = [r for r in healthy if r not in tried]
            if untried:
                healthy = tuple(untried)
        if affinity is not None and self.affinity:
            sticky = self._sticky(healthy, affinity)
            if not self._overloaded(sticky, healthy):
                return sticky
        if len(healthy) == 1:
            return healthy[0]
        return self._lighter(*self._two(healthy))

    def _lighter(self, first: Replica, second: Replica) -> Replica:
        """The less loaded of two; at equal loads, one by a coin weighted as they are (so that
        at no load each endpoint's share follows its weight)."""
        first_load, second_load = self.load(first), self.load(second)
        if first_load == second_load:
            share = first.weight / (first.weight + second.weight)
            return first if self._rng.random() < share else second
        return first if first_load < second_load else second

    def _two(self, healthy: tuple[Replica, ...]) -> tuple[Replica, Replica]:
        """Two different endpoints, each drawn by weight."""
        if len(healthy) == 2:
            return healthy[0], healthy[1]
        if healthy is self._healthy:
            bounds = self._bounds
        else:
            total, bounds = 0.0, []
            for replica in healthy:
                total += replica.weight
                bounds.append(total)
        top = bounds[-1]
        rng = self._rng.random
        last = len(healthy) - 1
        first = min(bisect(bounds, rng() * top), last)
        # The second from the weights that remain: the first's span is skipped over.
        span = healthy[first].weight
        point = rng() * (top - span)
        if point >= bounds[first] - span:
            point += span
        second = min(bisect(bounds, point), last)
        if second == first:  # only at a float's edge
            second = (first + 1) % len(healthy)
        return healthy[first], healthy[second]

    def load(self, replica: Replica) -> float:
        """Requests per unit of weight: in flight from here, or the server's own queue."""
        if (
            self.balance == "server_queue"
            and monotonic() - replica.scraped_at < self.scrape_stale_s
        ):
            queued = replica.queue + replica.sent_since_scrape
            if replica.kv_cache >= KV_CACHE_FULL:
                queued += 1e6
            return queued / replica.weight
        return replica.in_flight / replica.weight

    def _sticky(self, healthy: Sequence[Replica], affinity: int) -> Replica:
        """The endpoint the hash lands on: weighted rendezvous (highest score wins)."""
        best, best_score = healthy[0], -math.inf
        for replica in healthy:
            unit = ((_mix(affinity ^ replica.salt) >> 11) + 1) / float(1 << 53)  # in (0, 1]
            score = replica.weight / -math.log(unit) if unit < 1.0 else math.inf
            if score > best_score:
                best, best_score = replica, score
        return best

    def _overloaded(self, replica: Replica, healthy: Sequence[Replica]) -> bool:
        mean = sum(self.load(r) for r in healthy) / len(healthy)
        return self.load(replica) > 1.5 * mean + 2 / replica.weight

    # Outcomes

    def sent(self, replica: Replica) -> None:
        """An attempt is about to go to the replica."""
        replica.in_flight += 1
        replica.requests += 1
        replica.sent_since_scrape += 1

    def answered(
        self, replica: Replica, status: int, seconds: float, now: float | None = None
    ) -> None:
        """The replica's answer began: a 5xx or a 429 is a failure, the rest a success."""
        replica.observe(seconds)
        if status >= 500:
            self.failed(replica, "status_5xx", now)
        elif status == 429:
            self.failed(replica, "status_429", now)
        else:
            replica.failures = 0
            if replica.ejections and not replica.ejected:
                now = monotonic() if now is None else now
                if now - replica.returned_at > self.ejection.max_s:
                    replica.ejections = 0  # back for long enough: the next back-off starts over

    def failed(self, replica: Replica, failure: Failure, now: float | None = None) -> None:
        """A failure of the replica's; ``after_failures`` in a row eject it (a probe's at once)."""
        replica.errors[failure] += 1
        replica.failures += 1
        if replica.ejected:
            return
        if failure == "probe" or replica.failures >= self.ejection.after_failures:
            self.eject(replica, now)

    def eject(self, replica: Replica, now: float | None = None) -> None:
        now = monotonic() if now is None else now
        back_off = min(self.ejection.base_s * 2**replica.ejections, self.ejection.max_s)
        replica.ejections += 1
        replica.ejected_total += 1
        replica.ejected = True
        replica.ejected_until = now + back_off
        self._refresh()

    def due_to_return(self, now: float) -> list[Replica]:
        """Ejected replicas whose back-off ended and that no probe is checking yet."""
        return [r for r in self.replicas if r.ejected and not r.probing and r.ejected_until <= now]

    def probed(self, replica: Replica, passed: bool, now: float | None = None) -> None:
        """The probe of an ejected replica ended: back in if it passed, else out for longer."""
        replica.probing = False
        now = monotonic() if now is None else now
        if not replica.ejected:
            return
        if not passed:
            replica.errors["probe"] += 1
            replica.ejected = False
            self.eject(replica, now)
            return
        replica.ejected = False
        replica.failures = 0
        replica.returned_at = now
        self._refresh()


def affinity_of(key_id: str, prefix: bytes) -> int:
    """The 64-bit hash a key and its request's first messages stick by (the same in every
    gateway: no per-process salt)."""
    digest = blake2b(key_id.encode() + b"\0" + prefix, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _mix(value: int) -> int:
    """splitmix64's finaliser: spreads the bits of ``value`` over 64."""
    value = (value + _MIX) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)
