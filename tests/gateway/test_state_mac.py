"""Key states are trusted only when the key service made them (their MAC verifies), and keys
nobody issued cost bounded work: forged events and Redis writes, keyring rotation, and
100,000 invented keys against one gateway, on the real servers."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from datetime import UTC, datetime

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from deploy.stack import Endpoints
from services.gateway.keys.cache import LocalCache, RateBound
from services.gateway.keys.trust import StateTrust
from services.gateway.telemetry.metrics import Metrics
from services.keys.main import create_app as create_keys
from shared.apikeys import generate
from shared.events import KeyEvent, KeyState
from shared.key_store import KeyStore
from shared.state_mac import Keyring
from shared.topics import KEYS_EVENTS
from tests.gateway.conftest import StartGateway
from tests.gateway.harness import INTERNAL_TOKEN, FakeKeyService, new_key, publish_key
from tests.keys.harness import AUTH, make_settings
from tests.manual_clock import ManualClock
from tests.polling import eventually
from tests.served import Served
from tests.state_macs import KEYRING, STATE_MAC_KEYS, sign

MODELS = "/v1/models"


async def _status(client: httpx.AsyncClient, url: str, secret: str) -> int:
    answer = await client.get(url + MODELS, headers={"Authorization": f"Bearer {secret}"})
    return answer.status_code


async def _refused(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    text = (await client.get(url + "/metrics")).text
    found = re.findall(
        r'^tollgate_gateway_key_states_refused_total\{source="(\w+)"\} (\S+)$', text, re.M
    )
    return {source: float(value) for source, value in found}


async def _key_events(client: httpx.AsyncClient, url: str) -> float:
    text = (await client.get(url + "/metrics")).text
    found = re.search(r"^tollgate_gateway_key_events_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _publish_raw(bootstrap: str, prefix: str, key_id: str, value: bytes) -> None:
    """A record on keys.events as anyone with write access to the topic could send it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(prefix + KEYS_EVENTS, value, key=key_id.encode())
    finally:
        await producer.stop()


def _event(state: KeyState) -> bytes:
    return KeyEvent(
        type="key.created", occurred_at=datetime.now(UTC), **state.model_dump()
    ).to_bytes()


async def test_a_forged_key_event_does_not_authenticate_and_is_counted(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    gateway = await make_gateway()
    bootstrap = endpoints.kafka_bootstrap
    unsigned_secret, unsigned = new_key(project="proj_victim")
    unsigned = unsigned.model_copy(update={"mac": None})  # a valid shape, no MAC
    wrong_secret, wrong = new_key(project="proj_victim")
    other = Keyring.parse(SecretStr("test1:not-the-key-service-secret-000"), "forger")
    wrong = other.sign(wrong)  # the signer id of the real keyring, another secret
    tampered_secret, tampered = new_key(project="proj_victim", status="revoked")
    tampered = tampered.model_copy(update={"status": "active"})  # a real MAC, state changed
    good_secret, good = new_key()
    for state in (unsigned, wrong, tampered):
        await _publish_raw(bootstrap, topic_prefix, state.key_id, _event(state))
    await publish_key(bootstrap, topic_prefix, good)  # after them: once it is read, so are they
    async with httpx.AsyncClient() as client:
        await eventually(
            lambda: _status(client, gateway.url, good_secret),
            until=lambda s: s == 200,
            what="the genuine key read from the topic",
        )
        for secret in (unsigned_secret, wrong_secret, tampered_secret):
            assert await _status(client, gateway.url, secret) == 401
        refused = await _refused(client, gateway.url)
        assert refused["kafka"] == 3, refused
        assert refused["verify"] == 0  # the fake key service knows none of them
        assert await _key_events(client, gateway.url) == 1, "only the genuine event applied"
    store = KeyStore(redis_client, redis_prefix)
    for state in (unsigned, wrong, tampered):
        assert await store.lookup(state.key_hash) is None, "a forged state reached Redis"
    assert await store.lookup(good.key_hash) is not None


async def test_a_forged_redis_state_neither_mints_a_key_nor_brings_a_revoked_one_back(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    # A short unsubscribed TTL and no negative cache: every request asks Redis again.
    gateway = await make_gateway(negative_cache_ttl_s=0, local_cache_ttl_s=0.2)
    store = KeyStore(redis_client, redis_prefix)
    revoked_secret, state = new_key()
    revoked = sign(state.model_copy(update={"status": "revoked", "version": 2}))
    keyservice[0].add(revoked)
    await publish_key(endpoints.kafka_bootstrap, topic_prefix, state)
    await publish_key(endpoints.kafka_bootstrap, topic_prefix, revoked, "key.revoked")
    minted_secret, minted = new_key(project="proj_victim")
    async with httpx.AsyncClient() as client:

        async def in_redis() -> int:
            found = await store.lookup(state.key_hash)
            return found.version if found else 0

        await eventually(in_redis, until=lambda v: v == 2, what="the revocation in Redis")
        assert await _status(client, gateway.url, revoked_secret) == 401
        # Someone with write access to Redis: a newer "active" version of the revoked key and
        # a key of their own, each on its hash key and its state key, and pushed to every
        # gateway's subscription.
        back = state.model_copy(update={"version": 99})  # its old MAC: the version changed
        for forged in (back, minted.model_copy(update={"mac": None})):
            text = forged.model_dump_json()
            for key in (store.hash_key(forged.key_hash), store.state_key(forged.key_id)):
                await redis_client.hset(key, mapping={"v": forged.version, "s": text})
            await redis_client.publish(store.channel, text)
        await eventually(
            lambda: _refused(client, gateway.url),
            until=lambda r: r["subscription"] >= 2,
            what="the pushed states refused",
        )
        for _ in range(5):  # past the cache TTL: Redis is asked each time
            assert await _status(client, gateway.url, revoked_secret) == 401
            assert await _status(client, gateway.url, minted_secret) == 401
            await asyncio.sleep(0.25)
        refused = await _refused(client, gateway.url)
        assert refused["redis"] >= 2, refused
        # The key service's next write replaces the forged state whatever its version.
        await publish_key(
            endpoints.kafka_bootstrap,
            topic_prefix,
            revoked.model_copy(update={"version": 3}),
            "key.revoked",
        )
        await eventually(in_redis, until=lambda v: v == 3, what="the forged state replaced")
        held = await store.state(state.key_id)
        assert held is not None
        assert (held.version, held.status) == (3, "revoked")
        assert await _status(client, gateway.url, revoked_secret) == 401


async def test_a_rotated_out_entry_is_refused_and_the_second_entry_accepted(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
) -> None:
    # The gateways' keyring mid-rotation: the new entry first, the tests' (old) one second.
    rotated = f"new2:a-new-state-mac-secret-0123456789,{STATE_MAC_KEYS}"
    gateway = await make_gateway(state_mac_keys=SecretStr(rotated))
    bootstrap = endpoints.kafka_bootstrap
    second_secret, by_second = new_key()  # signed by the tests' entry, the second here
    gone = Keyring.parse(SecretStr("gone0:a-retired-state-mac-secret-0123"), "retired")
    gone_secret, by_gone = new_key()
    by_gone = gone.sign(by_gone)  # an entry no longer in the keyring
    first = Keyring.parse(SecretStr(rotated), "rotated")
    first_secret, by_first = new_key()
    by_first = first.sign(by_first)
    await _publish_raw(bootstrap, topic_prefix, by_gone.key_id, _event(by_gone))
    for state in (by_second, by_first):
        await _publish_raw(bootstrap, topic_prefix, state.key_id, _event(state))
    async with httpx.AsyncClient() as client:
        for secret in (second_secret, first_secret):
            await eventually(
                lambda secret=secret: _status(client, gateway.url, secret),  # type: ignore[misc]
                until=lambda s: s == 200,
                what="a state of either entry accepted",
            )
        assert await _status(client, gateway.url, gone_secret) == 401
        assert (await _refused(client, gateway.url))["kafka"] == 1


async def _fire(url: str, secrets: list[str], window: int) -> int:
    """Send each key once on one connection, window requests at a time (pipelined); the
    number of 401 answers."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    refused = 0
    try:
        for start in range(0, len(secrets), window):
            chunk = secrets[start : start + window]
            writer.write(
                b"".join(
                    f"GET {MODELS} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {s}\r\n\r\n"
                    .encode()
                    for s in chunk
                )
            )  # fmt: skip
            await writer.drain()
            answers = 0
            while answers < len(chunk):
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                assert length is not None, head
                await reader.readexactly(int(length.group(1)))
                answers += 1
                refused += head.startswith(b"HTTP/1.1 401")
    finally:
        writer.close()
    return refused


async def test_invented_keys_cost_at_most_the_verify_bound(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
) -> None:
    rate, burst = 50.0, 100
    gateway = await make_gateway(verify_rate_per_s=rate, verify_burst=burst)
    valid_secret, valid = new_key()
    await publish_key(endpoints.kafka_bootstrap, topic_prefix, valid)
    invented = [generate() for _ in range(100_000)]  # well formed, checksum and all
    async with httpx.AsyncClient() as client:
        await eventually(
            lambda: _status(client, gateway.url, valid_secret),
            until=lambda s: s == 200,
            what="the valid key served",
        )
        quiet: list[float] = []
        for _ in range(50):
            sent = time.perf_counter()
            assert await _status(client, gateway.url, valid_secret) == 200
            quiet.append(time.perf_counter() - sent)
        calls_before = keyservice[0].calls
        started = time.monotonic()
        firing = asyncio.gather(*(_fire(gateway.url, invented[i::8], window=64) for i in range(8)))
        busy: list[float] = []
        while not firing.done():
            sent = time.perf_counter()
            assert await _status(client, gateway.url, valid_secret) == 200
            busy.append(time.perf_counter() - sent)
            await asyncio.sleep(0.01)
        refused = sum(await firing)
        elapsed = time.monotonic() - started
    calls = keyservice[0].calls - calls_before
    print(
        f"\n100,000 invented keys in {elapsed:.1f} s: {calls} verify calls (bound"
        f" {burst} + {rate:g}/s = {burst + rate * elapsed:.0f}); valid key median"
        f" {statistics.median(quiet) * 1000:.1f} ms quiet, {statistics.median(busy) * 1000:.1f}"
        f" ms under fire ({len(busy)} requests)"
    )
    assert refused == len(invented), "every invented key refused with 401"
    assert elapsed < 240, "the invented keys took too long to refuse"
    assert calls <= burst + rate * elapsed + 5
    assert len(busy) >= 10, "the valid key kept being served meanwhile"


async def test_the_real_key_services_states_verify_at_the_gateway_by_every_path(
    *,
    make_gateway: StartGateway,
    endpoints: Endpoints,
    topic_prefix: str,
    redis_prefix: str,
    pg_schema: str,
) -> None:
    settings = make_settings(
        kafka=endpoints.kafka_bootstrap,
        database_url=endpoints.database_url,
        schema=pg_schema,
        prefix=topic_prefix,
        group=f"keys-{pg_schema}",
        redis_url=endpoints.redis_url,
        redis_prefix=redis_prefix,
        log_json=False,
    ).model_copy(update={"internal_token": SecretStr(INTERNAL_TOKEN)})  # the gateways' token
    keys = await Served(create_keys(settings)).start()
    try:
        async with httpx.AsyncClient(base_url=keys.url, headers=AUTH, timeout=10) as admin:
            project = (await admin.post("/v1/projects", json={"name": "p"})).json()["id"]
            body = {"name": "k", "budget": {"limit_usd": "12.345", "period": "day"}}
            created = await admin.post(f"/v1/projects/{project}/keys", json=body)
            assert created.status_code == 201
            secret = created.json()["key"]
            # By Redis (the key service wrote it), by the subscription and Kafka (a change
            # after the gateway started), and by the verify answer (a gateway whose Redis
            # prefix holds nothing).
            by_redis = await make_gateway(keys_url=keys.url)
            by_verify = await make_gateway(keys_url=keys.url, redis_prefix=redis_prefix + "empty:")
            renamed = await admin.patch(
                f"/v1/projects/{project}/keys/{created.json()['id']}", json={"name": "k2"}
            )
            assert renamed.status_code == 200
            async with httpx.AsyncClient() as client:
                for gateway in (by_redis, by_verify):
                    await eventually(
                        lambda url=gateway.url: _status(client, url, secret),  # type: ignore[misc]
                        until=lambda s: s == 200,
                        what="the key served",
                    )
                await eventually(
                    lambda: _key_events(client, by_redis.url),
                    until=lambda n: n >= 2,
                    what="both events read from keys.events",
                )
                for gateway in (by_redis, by_verify):
                    assert set((await _refused(client, gateway.url)).values()) == {0.0}
    finally:
        await keys.stop()


@pytest.mark.unit
def test_the_negative_cache_is_bounded_and_forgets_the_least_recently_seen() -> None:
    clock = ManualClock()
    cache = LocalCache(10, 30, 60, negative_size=3, clock=clock)
    for key_hash in ("a", "b", "c"):
        cache.add_negative(key_hash)
    assert cache.is_negative("a")  # seen again: now the most recent
    for key_hash in ("d", "e"):
        cache.add_negative(key_hash)  # a flood pushes out only the oldest, never all
    assert cache.negative_count == 3
    assert [k for k in "abcde" if cache.is_negative(k)] == ["a", "d", "e"]
    clock.now += 61
    assert not cache.is_negative("a")


@pytest.mark.unit
def test_the_verify_bound_is_a_token_bucket() -> None:
    clock = ManualClock()
    bound = RateBound(50, 100, clock=clock)
    assert sum(bound.take() for _ in range(1000)) == 100  # the burst at once
    clock.now += 1.0
    assert sum(bound.take() for _ in range(1000)) == 50  # then the rate
    clock.now += 3600
    assert sum(bound.take() for _ in range(1000)) == 100  # never more than the burst


@pytest.mark.unit
def test_unsigned_states_are_accepted_only_while_upgrading_and_wrong_macs_never() -> None:
    _, state = new_key()
    unsigned = state.model_copy(update={"mac": None})
    tampered = state.model_copy(update={"project_id": "proj_other"})
    strict = StateTrust(KEYRING, Metrics())
    upgrading = StateTrust(KEYRING, Metrics(), accept_unsigned=True)
    assert strict.admit(state, "kafka")
    assert upgrading.admit(state, "kafka")
    assert not strict.admit(unsigned, "kafka")
    assert upgrading.admit(unsigned, "kafka")
    assert not upgrading.admit(tampered, "kafka")
    refused = strict.metrics.registry.get_sample_value(
        "tollgate_gateway_key_states_refused_total", {"source": "kafka"}
    )
    assert refused == 1
