"""Prometheus metrics of one gateway instance (its own registry, so replicas in a test coexist).

Labels never carry a secret, and no key id either: one series per key would grow without bound;
key ids are on the traces and on every usage event instead.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from services.gateway.telemetry.request_metrics import LabelledCounter, LabelledHistogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Where a key state enters a gateway: the feeder (keys.events), the Redis subscription, a Redis
# lookup, the key service's verify answer.
REFUSED_SOURCES = ("kafka", "subscription", "redis", "verify")
_OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class QuarantineFigures(Protocol):
    """What the gauges read of the quarantine."""

    @property
    def count(self) -> int: ...


class SpoolFigures(Protocol):
    """What the gauges read of the spool. A protocol too: the spool is in usage/, which imports
    this module to count its events."""

    @property
    def depth(self) -> int: ...

    @property
    def used_bytes(self) -> int: ...

    @property
    def max_bytes(self) -> int: ...

    @property
    def quarantine(self) -> QuarantineFigures: ...


class UsageFigures(Protocol):
    """What the gauges read from the usage emitter at each scrape. A protocol, not the
    emitter's class: the emitter imports this module to count its events."""

    @property
    def spool(self) -> SpoolFigures: ...

    @property
    def pending(self) -> int: ...

    @property
    def accepting(self) -> bool: ...


class Metrics:
    """Requests by status, latency and overhead, auth cache outcomes, usage delivery, spool."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Updated on every request: collectors without a lock per update.
        self.requests = LabelledCounter(
            "tollgate_gateway_requests", "Requests answered", ["endpoint", "status"]
        )
        self.latency = LabelledHistogram(
            "tollgate_gateway_request_seconds",
            "Whole request time, upstream included",
            _LATENCY_BUCKETS,
            ["endpoint"],
        )
        self.overhead = LabelledHistogram(
            "tollgate_gateway_overhead_seconds",
            "Time spent in the gateway itself (x-tollgate-overhead-ms)",
            _OVERHEAD_BUCKETS,
        )
        self.auth = LabelledCounter(
            "tollgate_gateway_auth",
            "Key checks by where they were answered (local, redis, verify, negative, ...)",
            ["source", "result"],
        )
        for collector in (self.requests, self.latency, self.overhead, self.auth):
            r.register(collector)
        self.usage_events = Counter(
            "tollgate_gateway_usage_events",
            "Usage events by outcome (published, spooled, replayed, quarantined)",
            ["outcome"],
            registry=r,
        )
        self.spool_depth = Gauge(
            "tollgate_gateway_spool_depth", "Usage events waiting in the spool", registry=r
        )
        self.spool_bytes = Gauge(
            "tollgate_gateway_spool_bytes",
            "Bytes of spool segments and quarantine files (what counts against the bound)",
            registry=r,
        )
        self.spool_max_bytes = Gauge(
            "tollgate_gateway_spool_max_bytes", "The spool's bound (SPOOL_MAX_BYTES)", registry=r
        )
        self.quarantined = Gauge(
            "tollgate_gateway_usage_quarantined",
            "Usage records in quarantine (Kafka refuses them for good, or not an event)",
            registry=r,
        )
        self.usage_pending = Gauge(
            "tollgate_gateway_usage_pending",
            "Usage events in memory, not yet on Kafka or in the spool",
            registry=r,
        )
        self.usage_accepting = Gauge(
            "tollgate_gateway_usage_accepting",
            "1 while usage can be kept; 0: spool full and Kafka away, metered requests get 503",
            registry=r,
        )
        self.key_events = Counter(
            "tollgate_gateway_key_events", "Key events applied by the feeder", registry=r
        )
        self.key_states_refused = Counter(
            "tollgate_gateway_key_states_refused",
            "Key states refused where they entered (kafka, subscription, redis, verify): no MAC"
            " of the key service's, a wrong one, or no key state at all",
            ["source"],
            registry=r,
        )
        for source in REFUSED_SOURCES:
            self.key_states_refused.labels(source)  # shown at 0 before the first

    def watch_usage(self, emitter: UsageFigures) -> None:
        """Read the spool's and the emitter's figures at each scrape."""
        spool = emitter.spool
        self.spool_depth.set_function(lambda: spool.depth)
        self.spool_bytes.set_function(lambda: spool.used_bytes)
        self.spool_max_bytes.set_function(lambda: spool.max_bytes)
        self.quarantined.set_function(lambda: spool.quarantine.count)
        self.usage_pending.set_function(lambda: emitter.pending)
        self.usage_accepting.set_function(lambda: int(emitter.accepting))

    def render(self) -> bytes:
        return generate_latest(self.registry)
