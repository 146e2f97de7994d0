"""What publishing one usage event costs in CPU: aiokafka's producer against FastStream's.

The gateway emits one record per request, so its producer's CPU per record is part of every
request's cost. This publishes the same records (a usage event's size, 50 keys) to the same
broker with the same producer settings (``shared/bus.py``'s: idempotent, acks=all, 5 ms
linger), three ways, interleaved: aiokafka's ``send``, a FastStream publisher's ``publish``
and FastStream's ``broker.publish`` (both ``no_confirm``, acknowledgements gathered at the
end, as the gateway does). CPU per record is this process's, from ``time.process_time``; the
ratio is against aiokafka in the same round. The figures decide why the gateway's publisher
stays on aiokafka (``services/gateway/usage/publisher.py``). Last, the gateway's own ``Publisher``
in calls of 500 records (a full emitter batch, each call waiting for its acknowledgements as
the emitter does), record by record and as batches built per partition
(``services/gateway/usage/produce_batches.py``); the ratio is against aiokafka's ``send`` too.

    uv run --frozen python bench/bus_publish.py [--records 20000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial

import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.lib.servers import delete_topics, stack_endpoints
from services.gateway.usage.produce_batches import MIN_PER_PARTITION
from services.gateway.usage.publisher import Publisher
from shared.bus import PRODUCER_OPTIONS, new_broker
from shared.topics import TOPICS, USAGE_EVENTS

USAGE = next(spec for spec in TOPICS if spec.name == USAGE_EVENTS)

# About a usage event's size (shared/events.py UsageRecorded as the gateway emits it).
PAYLOAD = json.dumps(
    {"event_id": "0" * 26, "key_id": "key_" + "a" * 26, "project_id": "proj_" + "b" * 26,
     "model": "gpt-4o-mini", "endpoint": "/v1/chat/completions", "input_tokens": 1234,
     "output_tokens": 567, "status": 200, "occurred_at": "2026-12-02T04:00:00.000000Z",
     "pad": "p" * 200}
).encode()  # fmt: skip


def keys(n: int) -> list[bytes]:
    return [f"key_{i % 50:026d}".encode() for i in range(n)]


async def aiokafka_send(bootstrap: str, topic: str, n: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)
    await producer.start()
    try:
        started = time.process_time()
        futures = [await producer.send(topic, value=PAYLOAD, key=k) for k in keys(n)]
        await asyncio.gather(*futures)
        return time.process_time() - started
    finally:
        await producer.stop()


async def faststream_publisher(bootstrap: str, topic: str, n: int) -> float:
    broker = new_broker(bootstrap, "bench-bus")
    publisher = broker.publisher(topic)
    await broker.start()
    try:
        started = time.process_time()
        futures = [await publisher.publish(PAYLOAD, key=k, no_confirm=True) for k in keys(n)]
        await asyncio.gather(*futures)
        return time.process_time() - started
    finally:
        await broker.stop()


async def faststream_broker(bootstrap: str, topic: str, n: int) -> float:
    broker = new_broker(bootstrap, "bench-bus")
    await broker.start()
    try:
        started = time.process_time()
        futures = [
            await broker.publish(PAYLOAD, topic=topic, key=k, no_confirm=True) for k in keys(n)
        ]
        await asyncio.gather(*futures)
        return time.process_time() - started
    finally:
        await broker.stop()


async def gateway_publisher(
    bootstrap: str, topic: str, n: int, call: int, batches: bool = True
) -> float:
    """The gateway's own publisher, in calls of ``call`` records as its emitter makes them;
    without ``batches`` it never builds batches per partition (record by record)."""
    never = n + 1
    publisher = Publisher(
        bootstrap,
        topic,
        delivery_timeout_s=10.0,
        batched_from=MIN_PER_PARTITION if batches else never,
    )
    messages = list(zip(keys(n), [PAYLOAD] * n, strict=True))
    try:
        await publisher.publish(messages[:call])  # connected before the clock starts
        started = time.process_time()
        for at in range(0, n, call):
            outcome = await publisher.publish(messages[at : at + call])
            assert outcome.delivered == len(messages[at : at + call]), outcome.trouble
        return time.process_time() - started
    finally:
        await publisher.stop()


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    bootstrap = stack_endpoints().kafka_bootstrap
    prefix = f"bench-bus-{uuid.uuid4().hex[:8]}."
    topic = prefix + "usage.events"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # As many partitions as usage.events has.
        await admin.create_topics([NewTopic(topic, USAGE.partitions, 1)])
    finally:
        await admin.close()
    ways: dict[str, Callable[[str, str, int], Awaitable[float]]] = {
        "aiokafka send": aiokafka_send,
        "FastStream publisher.publish": faststream_publisher,
        "FastStream broker.publish": faststream_broker,
        "Publisher, 500 a call, by record": partial(gateway_publisher, call=500, batches=False),
        "Publisher, 500 a call, batches": partial(gateway_publisher, call=500),
    }
    us: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for _ in range(args.rounds):
            for name, way in ways.items():
                us[name].append(1e6 * await way(bootstrap, topic, args.records) / args.records)
    finally:
        await delete_topics(bootstrap, prefix)
    base = statistics.median(us["aiokafka send"])
    figures = {
        name: {"cpu_us_per_record": statistics.median(v), "ratio": statistics.median(v) / base}
        for name, v in us.items()
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{args.records} records x {args.rounds} rounds, CPU per record (median):")
        for name, row in figures.items():
            print(f"  {name:<34} {row['cpu_us_per_record']:6.1f} us  {row['ratio']:4.2f}x")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
