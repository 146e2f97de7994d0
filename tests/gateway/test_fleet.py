"""The choice among a model's endpoints and their health, as pure logic (no servers)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from services.gateway.upstream.fleet import Fleet, Replica, affinity_of
from services.gateway.upstream.health import read_queue
from services.gateway.upstream.route import Route, routes_of
from shared.catalogue import ModelEntry, Upstream

pytestmark = pytest.mark.unit  # no server: `make test-unit`

HEADERS = {"content-type": "application/json"}


def fleet_of(*weights: float, seed: int = 7, **upstream: Any) -> Fleet:
    endpoints = [
        {"base_url": f"http://10.0.0.{i + 1}:8000/v1", "weight": w} for i, w in enumerate(weights)
    ]
    spec = Upstream.model_validate({"endpoints": endpoints, **upstream})
    return Fleet("m", spec, HEADERS, rng=random.Random(seed))


def shares(fleet: Fleet, picks: int, **options: Any) -> Counter[str]:
    return Counter(fleet.pick(**options).name for _ in range(picks))  # type: ignore[union-attr]


# The catalogue's forms


def test_one_base_url_is_a_fleet_of_one() -> None:
    spec = Upstream.model_validate({"base_url": "http://127.0.0.1:8090/v1/"})
    fleet = Fleet("m", spec, HEADERS)
    assert [r.name for r in fleet.replicas] == ["http://127.0.0.1:8090/v1"]
    assert fleet.pick() is fleet.replicas[0]
    assert fleet.replicas[0].targets["/v1/embeddings"].head.startswith(b"POST /v1/embeddings ")


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"base_url": "http://a/v1", "endpoints": [{"base_url": "http://b/v1"}]},
        {"base_url": "http://a/v1", "dns": {"name": "vllm", "port": 8000}},
        {"endpoints": [{"base_url": "http://a/v1"}, {"base_url": "http://a/v1/"}]},
        {"endpoints": [{"base_url": "http://a/v1", "weight": 0}]},
        {"base_url": "http://user:secret@a/v1"},
        {"base_url": "ftp://a/v1"},
        {"base_url": "http://a:99999/v1"},
        {"base_url": "http://a/v1\n"},
        {"dns": {"name": "vllm; rm -rf /", "port": 8000}},
        {"dns": {"name": "vllm", "port": 0}},
        {"dns": {"name": "vllm", "port": 8000, "path": "v1"}},
        {"base_url": "http://a/v1", "health": {"path": "health"}},
        {"base_url": "http://a/v1", "ejection": {"base_s": 10, "max_s": 1}},
        {"base_url": "http://a/v1", "balance": "round_robin"},
    ],
)
def test_a_malformed_upstream_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Upstream.model_validate(spec)


def test_a_dns_upstream_starts_empty_and_takes_its_addresses() -> None:
    spec = Upstream.model_validate(
        {"dns": {"name": "vllm.ns.svc", "port": 8000, "scheme": "https"}}
    )
    fleet = Fleet("m", spec, HEADERS)
    assert fleet.pick() is None
    fleet.place([("https://10.1.0.5:8000/v1", 1.0, "vllm.ns.svc")])
    target = fleet.replicas[0].targets["/v1/chat/completions"]
    assert (target.host, target.name) == ("10.1.0.5", "vllm.ns.svc")  # TLS name and Host
    assert b"host: vllm.ns.svc:8000\r\n" in target.head


# Balance


def test_equal_endpoints_share_requests_evenly_at_no_load() -> None:
    counts = shares(fleet_of(1, 1, 1), 30_000)
    assert max(counts.values()) / min(counts.values()) < 1.05


def test_weights_set_the_shares_at_no_load() -> None:
    counts = shares(fleet_of(1, 3), 40_000)
    assert counts["http://10.0.0.2:8000/v1"] / counts["http://10.0.0.1:8000/v1"] == pytest.approx(
        3, rel=0.05
    )


def test_the_endpoint_with_more_in_flight_loses_every_comparison() -> None:
    fleet = fleet_of(1, 1, 1)
    busy = fleet.replicas[0]
    busy.in_flight = 5
    counts = shares(fleet, 9_000)
    assert busy.name not in counts
    assert max(counts.values()) / min(counts.values()) < 1.1


def test_weights_with_three_or_more_endpoints_follow_roughly() -> None:
    """Two distinct draws favour the heavier a little more than its weight (0.55 for 0.5)."""
    counts = shares(fleet_of(1, 1, 2), 40_000)
    heavy = counts["http://10.0.0.3:8000/v1"] / 40_000
    assert 0.5 < heavy < 0.6
    assert counts["http://10.0.0.1:8000/v1"] / counts["http://10.0.0.2:8000/v1"] == pytest.approx(
        1, rel=0.06
    )


def test_in_flight_counts_per_unit_of_weight() -> None:
    fleet = fleet_of(1, 4)
    light, heavy = fleet.replicas
    light.in_flight, heavy.in_flight = 1, 3  # 1 per unit against 0.75
    fleet._rng = random.Random(1)
    assert fleet._lighter(light, heavy) is heavy


def test_sent_and_end_keep_in_flight() -> None:
    fleet = fleet_of(1, 1)
    replica = fleet.replicas[0]
    fleet.sent(replica)
    fleet.sent(replica)
    replica.end()
    assert (replica.in_flight, replica.requests) == (1, 2)


def test_server_queue_scores_by_the_servers_queue_while_it_is_fresh() -> None:
    fleet = fleet_of(1, 1, balance="server_queue")
    idle, queued = fleet.replicas
    queued.queue, queued.scraped_at = 12, float("inf")  # never stale
    idle.queue, idle.scraped_at = 0, float("inf")
    queued.in_flight = 0
    idle.in_flight = 50  # from this gateway; the server says it is idle (others finished)
    assert queued.name not in shares(fleet, 1_000)


def test_server_queue_counts_what_was_sent_since_the_last_read() -> None:
    fleet = fleet_of(1, 1, balance="server_queue")
    a, b = fleet.replicas
    for replica in (a, b):
        replica.queue, replica.scraped_at = 2, float("inf")
    for _ in range(3):
        fleet.sent(a)
    assert fleet.load(a) == 5
    assert fleet.load(b) == 2


def test_a_full_kv_cache_is_picked_only_when_all_are() -> None:
    fleet = fleet_of(1, 1, balance="server_queue")
    full, free = fleet.replicas
    full.queue, full.kv_cache, full.scraped_at = 0, 0.99, float("inf")
    free.queue, free.kv_cache, free.scraped_at = 30, 0.5, float("inf")
    assert fleet._lighter(full, free) is free


def test_a_stale_queue_read_falls_back_to_in_flight() -> None:
    fleet = fleet_of(1, 1, balance="server_queue")
    a, b = fleet.replicas
    a.queue, a.scraped_at = 100, 0.0  # long ago
    a.in_flight, b.in_flight = 0, 3
    assert fleet._lighter(a, b) is a


# Affinity


def test_a_key_and_prefix_stick_to_one_endpoint() -> None:
    fleet = fleet_of(1, 1, 1, affinity="key_prefix")
    hashed = affinity_of("key_a", b'[{"role":"system","content":"You are terse."}]')
    assert len(shares(fleet, 200, affinity=hashed)) == 1


def test_affinity_spreads_keys_by_weight() -> None:
    fleet = fleet_of(1, 1, 2, affinity="key_prefix")
    counts = Counter(
        fleet.pick(affinity=affinity_of(f"key_{i}", b"[]")).name  # type: ignore[union-attr]
        for i in range(8_000)
    )
    assert counts["http://10.0.0.3:8000/v1"] / 8_000 == pytest.approx(0.5, abs=0.03)


def test_an_endpoint_added_takes_keys_only_from_the_others_share() -> None:
    before = fleet_of(1, 1, 1, affinity="key_prefix")
    after = fleet_of(1, 1, 1, 1, affinity="key_prefix")
    moved = 0
    for i in range(4_000):
        hashed = affinity_of(f"key_{i}", b"[]")
        old, new = before.pick(affinity=hashed), after.pick(affinity=hashed)
        assert old is not None
        assert new is not None
        if old.name != new.name:
            assert new.name == "http://10.0.0.4:8000/v1"  # only ever to the new one
            moved += 1
    assert moved / 4_000 == pytest.approx(0.25, abs=0.03)


def test_an_overloaded_sticky_endpoint_is_left_for_the_draw() -> None:
    fleet = fleet_of(1, 1, 1, affinity="key_prefix")
    hashed = affinity_of("key_a", b"[]")
    sticky = fleet.pick(affinity=hashed)
    assert sticky is not None
    sticky.in_flight = 10  # mean 3.3: above 1.5 x mean + 2
    assert sticky not in {fleet.pick(affinity=hashed) for _ in range(100)}


def test_affinity_is_off_unless_asked() -> None:
    fleet = fleet_of(1, 1, 1)
    assert len(shares(fleet, 300, affinity=affinity_of("key_a", b"[]"))) == 3


# Health


def test_failures_in_a_row_eject_and_a_success_resets_the_count() -> None:
    fleet = fleet_of(1, 1)
    bad = fleet.replicas[0]
    fleet.failed(bad, "connect", now=0)
    fleet.failed(bad, "status_5xx", now=0)
    fleet.answered(bad, 200, 0.01, now=0)
    fleet.failed(bad, "timeout", now=0)
    fleet.answered(bad, 429, 0.01, now=0)
    assert bad in fleet.healthy
    fleet.answered(bad, 503, 0.01, now=0)
    assert bad not in fleet.healthy
    assert bad.ejected_until == 1.0
    assert set(shares(fleet, 100)) == {fleet.replicas[1].name}
    assert bad.errors == {
        "connect": 1,
        "timeout": 1,
        "broken": 0,
        "status_5xx": 2,
        "status_429": 1,
        "probe": 0,
    }


def test_an_ejected_endpoint_returns_only_after_a_probe_passes() -> None:
    fleet = fleet_of(1, 1)
    bad = fleet.replicas[0]
    fleet.eject(bad, now=0)
    assert fleet.due_to_return(0.5) == []
    assert fleet.due_to_return(1.0) == [bad]
    fleet.probed(bad, passed=False, now=1.0)
    assert not bad.healthy
    assert bad.ejected_until == 3.0
    fleet.probed(bad, passed=False, now=3.0)
    assert bad.ejected_until == 7.0
    fleet.probed(bad, passed=True, now=7.0)
    assert bad.ejected_until <= 7.0
    assert bad.failures == 0
    assert bad in fleet.healthy


def test_the_back_off_is_bounded_and_starts_over_after_a_healthy_while() -> None:
    fleet = fleet_of(1, 1, ejection={"base_s": 1, "max_s": 5})
    bad = fleet.replicas[0]
    now = 0.0
    for _ in range(6):
        fleet.eject(bad, now=now)
        assert bad.ejected_until - now <= 5
        fleet.probed(bad, passed=True, now=now)
    fleet.answered(bad, 200, 0.01, now=now + 6)  # healthy for longer than max_s
    fleet.eject(bad, now=now + 6)
    assert bad.ejected_until == now + 7


def test_a_late_success_of_an_ejected_endpoint_keeps_its_back_off_growing() -> None:
    fleet = fleet_of(1, 1, ejection={"base_s": 1, "max_s": 60})
    bad = fleet.replicas[0]
    fleet.eject(bad, now=1000)
    fleet.answered(bad, 200, 0.01, now=1000.5)  # a request it held before its ejection
    fleet.probed(bad, passed=False, now=1001)
    assert bad.ejected_until == 1003  # 2 s: the second in a row


def test_a_failed_active_probe_ejects_at_once() -> None:
    fleet = fleet_of(1, 1)
    replica = fleet.replicas[0]
    fleet.failed(replica, "probe", now=0)
    assert not replica.healthy


def test_with_every_endpoint_ejected_there_is_no_pick_and_a_retry_after() -> None:
    fleet = fleet_of(1, 1)
    fleet.eject(fleet.replicas[0], now=0)
    fleet.eject(fleet.replicas[1], now=0)
    assert fleet.pick() is None
    assert fleet.retry_after_s(now=0.2) == 1


def test_a_retry_goes_to_an_endpoint_not_tried_then_to_any_healthy_one() -> None:
    fleet = fleet_of(1, 1, 1)
    first = fleet.replicas[0]
    assert first not in {fleet.pick([first]) for _ in range(100)}
    everyone = list(fleet.replicas)
    assert fleet.pick(everyone) in everyone


# Membership and reloads


def test_a_replica_kept_by_a_reload_keeps_its_load_and_health() -> None:
    entry = ModelEntry.model_validate(
        {
            "id": "m",
            "upstream": {
                "endpoints": [{"base_url": "http://a:1/v1"}, {"base_url": "http://b:1/v1"}]
            },
        }
    )
    routes = routes_of((entry,))
    kept = routes["m"].fleet.replicas[1]
    kept.in_flight = 4
    routes["m"].fleet.eject(kept, now=0)
    changed = entry.model_copy(
        update={
            "upstream": Upstream.model_validate(
                {
                    "endpoints": [
                        {"base_url": "http://b:1/v1", "weight": 2},
                        {"base_url": "http://c:1/v1"},
                    ]
                }
            )
        }
    )
    again = routes_of((changed,), routes)
    replicas = again["m"].fleet.replicas
    assert replicas[0] is kept
    assert kept.weight == 2
    assert kept.in_flight == 4
    assert [r.name for r in again["m"].fleet.healthy] == ["http://c:1/v1"]


def test_a_changed_credential_makes_new_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = ModelEntry.model_validate(
        {"id": "m", "upstream": {"base_url": "http://a:1/v1", "api_key_env": "FLEET_TEST_KEY"}}
    )
    monkeypatch.setenv("FLEET_TEST_KEY", "one")
    before = Route.of(entry)
    monkeypatch.setenv("FLEET_TEST_KEY", "two")
    after = Route.of(entry, before)
    assert after.fleet.replicas[0] is not before.fleet.replicas[0]
    assert b"Bearer two" in after.fleet.replicas[0].targets["/v1/embeddings"].head


def test_a_dns_fleet_keeps_its_addresses_across_a_reload() -> None:
    entry = ModelEntry.model_validate(
        {"id": "m", "upstream": {"dns": {"name": "vllm", "port": 8000}}}
    )
    before = Route.of(entry)
    before.fleet.place([("http://10.0.0.9:8000/v1", 1.0, "vllm")])
    after = Route.of(entry, before)
    assert after.fleet.replicas == before.fleet.replicas


def test_a_replica_removed_while_in_flight_ends_without_harm() -> None:
    fleet = fleet_of(1, 1)
    gone: Replica = fleet.replicas[0]
    fleet.sent(gone)
    fleet.place([("http://10.0.0.2:8000/v1", 1.0, None)])
    gone.end()
    assert gone.in_flight == 0
    assert [r.name for r in fleet.replicas] == ["http://10.0.0.2:8000/v1"]


# The servers' queues


VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5 0.5B"} 3.0
vllm:num_requests_running{engine="1",model_name="other"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5 0.5B"} 5.0
vllm:kv_cache_usage_perc{engine="0",model_name="a } b"} 0.42
vllm:num_preemptions_total{engine="0"} 999.0
"""

SGLANG = """sglang:num_running_reqs{model_name="m"} 2.0
sglang:num_queue_reqs{model_name="m"} 1.0
sglang:token_usage{model_name="m"} 0.97
"""


def test_vllm_and_sglang_queues_are_read() -> None:
    assert read_queue(VLLM) == (9.0, 0.42)
    assert read_queue(SGLANG) == (3.0, 0.97)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "process_cpu_seconds_total 12.0\n",
        "vllm:num_requests_running NaN\n",
        "vllm:num_requests_running -4\n",
        "vllm:num_requests_running +Inf\n",
        "vllm:num_requests_running{\n",
        "vllm:num_requests_running not-a-number\n",
    ],
)
def test_a_server_without_a_sane_queue_reports_none(text: str) -> None:
    assert read_queue(text) is None


def test_a_kv_cache_above_one_counts_as_full() -> None:
    assert read_queue("vllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 7\n") == (0.0, 1.0)
