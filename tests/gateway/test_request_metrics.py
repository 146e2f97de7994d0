"""The lock-free request metrics are exposed exactly as prometheus_client's own Counter and
Histogram are, fed the same values: same names, labels, buckets, counts and sums."""

from __future__ import annotations

import re

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)

from services.gateway.telemetry.metrics import Metrics
from services.gateway.telemetry.request_metrics import LabelledCounter, LabelledHistogram

pytestmark = pytest.mark.unit  # no server: `make test-unit`

_BUCKETS = (0.0002, 0.0005, 0.001, 0.01, 1, 30)
# On a bound, between bounds, below the first, past the last, zero.
_VALUES = (0.0002, 0.0003, 0.0001, 0.001, 0.5, 1.0, 31.0, 0.0, 30.0)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """Lines of the text format but the creation times (taken a moment apart)."""
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if not re.match(r"\w+_created", line))


def test_counter_and_histograms_expose_what_prometheus_client_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = LabelledCounter("t_requests", "Requests", ["endpoint", "status"])
    latency = LabelledHistogram("t_seconds", "Latency", _BUCKETS, ["endpoint"])
    plain = LabelledHistogram("t_overhead", "Overhead", _BUCKETS)
    for collector in (counter, latency, plain):
        ours.register(collector)
    their_counter = Counter("t_requests", "Requests", ["endpoint", "status"], registry=theirs)
    their_latency = Histogram(
        "t_seconds", "Latency", ["endpoint"], buckets=_BUCKETS, registry=theirs
    )
    their_plain = Histogram("t_overhead", "Overhead", buckets=_BUCKETS, registry=theirs)

    for endpoint, status in [("/v1/chat", "200"), ("/v1/chat", "200"), ("/v1/embed", "429")]:
        counter.inc(endpoint, status)
        their_counter.labels(endpoint, status).inc()
    for value in _VALUES:
        latency.observe(value, "/v1/chat")
        their_latency.labels("/v1/chat").observe(value)
        plain.observe(value)
        their_plain.observe(value)

    assert _exposition(ours) == _exposition(theirs)
    text = generate_latest(ours).decode()
    assert 't_requests_total{endpoint="/v1/chat",status="200"} 2.0' in text
    assert 't_seconds_bucket{endpoint="/v1/chat",le="0.0002"} 3.0' in text  # 0.0002, 0.0001, 0
    assert 't_requests_created{endpoint="/v1/embed",status="429"}' in text
    assert 't_seconds_created{endpoint="/v1/chat"}' in text
    assert "t_overhead_created " in text
    assert counter.value("/v1/chat", "200") == 2
    assert latency.count("/v1/chat") == len(_VALUES)


def test_created_series_follow_prometheus_clients_switch() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = LabelledCounter("t_requests", "Requests", ["endpoint"])
    latency = LabelledHistogram("t_seconds", "Latency", _BUCKETS, ["endpoint"])
    ours.register(counter)
    ours.register(latency)
    their_counter = Counter("t_requests", "Requests", ["endpoint"], registry=theirs)
    their_latency = Histogram(
        "t_seconds", "Latency", ["endpoint"], buckets=_BUCKETS, registry=theirs
    )
    counter.inc("/v1/chat")
    their_counter.labels("/v1/chat").inc()
    latency.observe(0.3, "/v1/chat")
    their_latency.labels("/v1/chat").observe(0.3)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # what PROMETHEUS_DISABLE_CREATED_SERIES=true does at import
    try:
        text, their_text = generate_latest(ours).decode(), generate_latest(theirs).decode()
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]
    assert "_created" not in text
    assert "_created" not in their_text
    assert sorted(text.splitlines()) == sorted(their_text.splitlines())
    assert "_created" in generate_latest(ours).decode(), "and back once enabled"


def test_wrong_label_counts_and_unsorted_buckets_are_refused() -> None:
    counter = LabelledCounter("t_requests", "Requests", ["endpoint", "status"])
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc("/v1/chat")
    histogram = LabelledHistogram("t_seconds", "Latency", _BUCKETS, ["endpoint"])
    with pytest.raises(ValueError, match="takes labels"):
        histogram.observe(0.1)
    with pytest.raises(ValueError, match="must increase"):
        LabelledHistogram("t_bad", "Bad", (1, 0.5))


def test_the_gateway_registry_renders_its_request_metrics() -> None:
    metrics = Metrics()
    metrics.requests.inc("/v1/chat/completions", "200")
    metrics.latency.observe(0.02, "/v1/chat/completions")
    metrics.overhead.observe(0.0004)
    text = metrics.render().decode()
    assert (
        'tollgate_gateway_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0' in text
    )
    assert (
        'tollgate_gateway_request_seconds_bucket{endpoint="/v1/chat/completions",le="0.025"} 1.0'
        in text
    )
    assert 'tollgate_gateway_overhead_seconds_bucket{le="0.0005"} 1.0' in text
    assert "# TYPE tollgate_gateway_requests_total counter" in text
