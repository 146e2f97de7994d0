"""Failure tests 1, 3, 5 and 6 of issue 5, on both ledgers (metering and billing) at once.

Each ends with the Usage and Costs APIs equal to the events produced: exact token,
request, error and dollar totals per project, key and model.
"""

from __future__ import annotations

import asyncio
import base64
import json
from contextlib import AsyncExitStack
from datetime import timedelta

import asyncpg

from shared.events import DeadLetter, UsageRecorded, utc_now
from shared.topics import USAGE_EVENTS_DLQ
from tests.metering.harness import UNPRICED, both, stats, stream_of, usage
from tests.metering.ledgers import Case, dead_letters, end_offsets
from tests.polling import eventually


async def test_replay_from_offset_zero_and_producer_retries_count_once(case: Case) -> None:
    events = stream_of(3000)
    # A producer retry: the same events (same ids) appended again at other offsets.
    await case.produce(events + events[:500])
    m_set, b_set = case.settings()
    async with both(m_set, b_set) as (m, b):
        await case.assert_ledgers(m, b, events)
    # Every stored offset forgotten: both services replay the whole topic from offset 0.
    conn = await asyncpg.connect(case.database_url)
    try:
        for schema in case.schemas:
            await conn.execute(f'DELETE FROM "{schema}".consumer_offsets')
    finally:
        await conn.close()
    more = stream_of(200, seed=10_000)
    await case.produce(more)
    async with both(m_set, b_set) as (m, b):
        await case.assert_ledgers(m, b, events + more)


async def test_two_replicas_with_rebalances_mid_stream(case: Case) -> None:
    # Small batches, so that the rebalances land among many batches in flight.
    m_set, b_set = case.settings(max_batch=100)
    produced: list[UsageRecorded] = []
    enough = asyncio.Event()

    async def keep_producing() -> None:
        # The stream goes on, 400 events every 0.2 s, until the test has seen both
        # rebalances happen under it.
        k = 0
        while not enough.is_set():
            chunk = stream_of(400, seed=k * 100_000)
            await case.produce(chunk)
            produced.extend(chunk)
            k += 1
            await asyncio.sleep(0.2)

    async def chunks_after(count: int) -> None:
        target = len(produced) + count * 400
        await eventually(lambda: asyncio.sleep(0, len(produced)), until=lambda n: n >= target)

    stream = asyncio.create_task(keep_producing())
    try:
        async with AsyncExitStack() as replica_a:
            m1, b1 = await replica_a.enter_async_context(both(m_set, b_set))
            await eventually(lambda: stats(m1), until=lambda s: s["applied"] > 0, what="A metering")
            await eventually(lambda: stats(b1), until=lambda s: s["applied"] > 0, what="A billing")
            async with both(m_set, b_set) as (m2, b2):
                # Replica B joins while the stream goes on: both groups rebalance.
                for client in (m2, b2):
                    await eventually(
                        lambda c=client: stats(c),  # type: ignore[misc]
                        until=lambda s: len(s["partitions"]) > 0,
                        timeout=30,
                        what="B assigned",
                    )
                await chunks_after(3)
                # Replica A leaves mid-stream: B takes every partition over.
                await replica_a.aclose()
                await chunks_after(3)
                enough.set()
                await stream
                await case.assert_ledgers(m2, b2, produced)
                assert len((await stats(m2))["partitions"]) == 6
                assert len((await stats(b2))["partitions"]) == 6
    finally:
        enough.set()
        await stream


async def test_poison_among_good_records_goes_to_the_dlq(case: Case) -> None:
    good = stream_of(600)
    now = utc_now()
    valid = usage().model_dump(mode="json")
    unbillable = [usage(model="test/nope", key="key_x"), usage(model=UNPRICED, key="key_y")]
    poison = {
        b"{not json": "invalid usage event",
        json.dumps({**valid, "input_tokens": -5}).encode(): "input_tokens",
        json.dumps({"event_id": valid["event_id"]}).encode(): "invalid usage event",
        usage(at=now + timedelta(hours=1)).to_bytes(): "in the future",
        usage(input_tokens=5, cached=9).to_bytes(): "cached_input_tokens exceeds input_tokens",
    }
    # Poison on two partitions, good records on all six: one batch spans them all.
    await case.produce(good)
    await case.produce(list(poison)[:3], partition=2)
    await case.produce(list(poison)[3:], partition=4)
    await case.produce(unbillable)
    m_set, b_set = case.settings()
    async with both(m_set, b_set) as (m, b):
        await case.assert_ledgers(m, b, good + unbillable, billed=good)
        letters = await dead_letters(case.bootstrap, case.prefix, 2 * len(poison) + 2)
    assert len(letters) == 2 * len(poison) + 2
    by_group: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        by_group.setdefault(letter.consumer_group.split("-")[0], []).append(letter)
        assert letter.source_topic == case.topic
    for group, extra in (("metering", 0), ("billing", 2)):
        got = by_group[group]
        assert len(got) == len(poison) + extra
        originals = {base64.b64decode(x.payload_base64): x.reason for x in got}
        for raw, reason in poison.items():
            assert reason in originals[raw], (group, originals[raw])
    billing = {base64.b64decode(x.payload_base64): x.reason for x in by_group["billing"]}
    assert "unknown model 'test/nope'" in billing[unbillable[0].to_bytes()]
    assert "no price" in billing[unbillable[1].to_bytes()]


FAULTS = """
CREATE SEQUENCE fault_seq;
CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE n bigint := nextval('fault_seq');
BEGIN
    IF n <= 3 THEN
        RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure';
    ELSIF n <= 5 THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN NULL;
END $$;
-- Deferred: it fires inside COMMIT, after the ledger rows were written.
CREATE CONSTRAINT TRIGGER fault AFTER INSERT OR UPDATE ON consumer_offsets
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault();
"""


async def test_retryable_database_errors_at_commit_are_retried(case: Case) -> None:
    events = stream_of(2000)
    m_set, b_set = case.settings(max_batch=500)
    async with both(m_set, b_set) as (m, b):
        conn = await asyncpg.connect(case.database_url)
        try:
            for schema in case.schemas:
                await conn.execute(f'SET search_path TO "{schema}"; {FAULTS}')
        finally:
            await conn.close()
        await case.produce(events)
        await case.assert_ledgers(m, b, events)
        for client in (m, b):
            counters = await stats(client)
            # 3 serialization failures and 2 connections killed inside COMMIT, all retried.
            assert counters["db_retries"] >= 5, counters
            assert counters["dead_letters"] == 0, counters
            assert counters["duplicates"] == 0, counters
    assert await dlq_is_empty(case)


async def dlq_is_empty(case: Case) -> bool:
    ends = await end_offsets(case.bootstrap, case.prefix + USAGE_EVENTS_DLQ)
    return sum(ends.values()) == 0
