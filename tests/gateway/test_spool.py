"""The spool and its quarantine on tmp folders, and the emitter's bound with no Kafka at all."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from deploy.ports import free_port
from services.gateway.telemetry.metrics import Metrics
from services.gateway.usage.emitter import UsageEmitter, parse_spooled
from services.gateway.usage.quarantine import Quarantine, Refused
from services.gateway.usage.spool import Spool, SpoolFull
from shared.events import UsageRecorded, utc_now
from tests.polling import eventually

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def usage(key_id: str = "key_a", **changes: object) -> UsageRecorded:
    event = UsageRecorded(
        occurred_at=utc_now(),
        request_id="req",
        project_id="proj_test",
        key_id=key_id,
        model="Qwen/Qwen2.5-0.5B-Instruct",
        endpoint="/v1/chat/completions",
        input_tokens=3,
        output_tokens=5,
        status_code=200,
        latency_ms=12,
    )
    return event.model_copy(update=changes)  # no validation: tests craft what models refuse


def lines(count: int) -> list[bytes]:
    return [usage().to_bytes() for _ in range(count)]


def test_segments_keep_their_count_and_size_across_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder)
    first = spool.append(lines(3))
    spool.append(lines(2))
    (folder / "00000000000000000001-deadbeef.jsonl").write_bytes(b"\n".join(lines(4)) + b"\n")
    (folder / "cut-short.tmp").write_bytes(b"{")  # a crash mid-write: never renamed
    again = Spool(folder)
    assert again.depth == 9, "named counts, plus a read of the legacy segment"
    assert again.size_bytes == sum(p.stat().st_size for p in folder.glob("*.jsonl"))
    assert not list(folder.glob("*.tmp"))
    assert again.segments()[0].name.startswith("00000000000000000001-"), "oldest first"
    kept = again.replace(first, lines(1))
    assert again.depth == 7
    assert again.segments().index(kept) == 1, "a rewritten segment keeps its place"
    assert not first.exists()
    for segment in again.segments():
        again.remove(segment)
    assert (again.depth, again.size_bytes) == (0, 0)
    assert (tmp_path / "spool-quarantine").is_dir(), "the quarantine sits beside the spool"


def test_the_bound_covers_spool_and_quarantine_and_warns_near_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one = len(usage().to_bytes()) + 1
    spool = Spool(tmp_path / "spool", max_bytes=10 * one, warn_ratio=0.5)
    with caplog.at_level(logging.INFO, "services.gateway.usage.spool"):
        spool.append(lines(4))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        spool.append(lines(1))
        assert [r.message for r in caplog.records] == ["usage spool near its bound"]
        spool.quarantine.add([Refused(b"x" * (3 * one), "test")], "replay")
        assert spool.used_bytes > 8 * one
        with pytest.raises(SpoolFull):
            spool.append(lines(2))
        assert any("full" in r.message for r in caplog.records if r.levelno == logging.ERROR)
    assert spool.depth == 5, "a refused segment is not written"
    spool.append(lines(2), force=True)  # at shutdown: past the bound rather than lost
    assert spool.depth == 7


def test_quarantine_keeps_record_reason_and_time_and_is_recounted(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    quarantine = Quarantine(folder)
    good = usage().to_bytes()
    quarantine.add([Refused(good, "MessageSizeTooLargeError: big")], "publish")
    quarantine.add([Refused(b"\xff\xfe{", "not JSON"), Refused(b"[]", "not an object")], "replay")
    assert quarantine.count == 3
    entries = Quarantine(folder).entries()
    assert [e["reason"] for e in entries] == [
        "MessageSizeTooLargeError: big",
        "not JSON",
        "not an object",
    ]
    assert entries[0]["record"] == good.decode(), "the original line, to re-feed after a fix"
    assert entries[0]["source"] == "publish"
    assert entries[0]["size"] == len(good)
    assert entries[1]["record_base64"] == "//57", "a line that is not UTF-8 is kept as base64"
    assert all(str(e["quarantined_at"]).endswith("+00:00") for e in entries)
    assert quarantine.size_bytes == sum(p.stat().st_size for p in folder.glob("*.jsonl"))
    sorted(folder.glob("*.jsonl"))[0].unlink()  # the operator took the first file away
    quarantine.rescan()
    assert quarantine.count == 2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json at all", "not JSON"),
        (usage().to_bytes()[:40], "not JSON"),
        (b'["a list"]', "not a JSON object"),
        (json.dumps({"model": "m"}).encode(), "no usable key_id"),
        (json.dumps({"key_id": 7}).encode(), "no usable key_id"),
        (json.dumps({"key_id": "k" * 500}).encode(), "no usable key_id"),
        (b'{"key_id": "a\xff"}', "not JSON"),
    ],
)
def test_a_spooled_line_that_is_no_event_is_refused_with_its_reason(
    line: bytes, reason: str
) -> None:
    parsed = parse_spooled(line)
    assert isinstance(parsed, Refused)
    assert parsed.reason.startswith(reason)
    good = usage(key_id="key_x").to_bytes()
    assert parse_spooled(good) == (b"key_x", good)


def _dead_kafka_emitter(spool: Spool, queue_size: int) -> UsageEmitter:
    return UsageEmitter(
        bootstrap=f"127.0.0.1:{free_port()}",
        topic_prefix="test-nobody.",
        spool=spool,
        metrics=Metrics(),
        queue_size=queue_size,
        delivery_timeout_s=0.5,
    )


async def test_events_past_the_queue_are_never_lost_and_stop_admission(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=100)
    emitter = _dead_kafka_emitter(spool, queue_size=3)
    for _ in range(7):  # in-flight requests finish after the queue filled
        emitter.record(usage())
    assert emitter.pending == 7
    assert not emitter.accepting, "no new metered request while the queue is full"
    await emitter.close()
    assert spool.depth == 7, "close writes them all, past the spool's bound if need be"


async def test_a_full_spool_holds_events_in_memory_until_there_is_room(tmp_path: Path) -> None:
    one = len(usage().to_bytes()) + 1
    spool = Spool(tmp_path / "spool", max_bytes=3 * one)
    emitter = _dead_kafka_emitter(spool, queue_size=1000)
    publisher = asyncio.create_task(emitter.run_publisher())
    try:
        for _ in range(3):
            emitter.record(usage())
        await eventually(lambda: asyncio.sleep(0, spool.depth), until=lambda d: d == 3)
        assert emitter.accepting
        for _ in range(4):
            emitter.record(usage())
        await eventually(
            lambda: asyncio.sleep(0, emitter.accepting), until=lambda a: not a, what="held"
        )
        assert emitter.pending == 4, "held in memory, not dropped"
        assert spool.depth == 3, "the bound held"
        assert "tollgate_gateway_usage_accepting 0.0" in emitter.metrics.render().decode()
        spool.max_bytes = 100 * one  # room again (an operator moved files away, say)
        await eventually(lambda: asyncio.sleep(0, spool.depth), until=lambda d: d == 7)
        assert emitter.accepting
        assert emitter.pending == 0
    finally:
        publisher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publisher
        await emitter.close()
    assert spool.depth == 7


def test_a_segment_put_there_by_hand_is_counted_and_replaced(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    refeed = spool.folder / "refeed.jsonl"  # an operator re-feeds quarantined records
    refeed.write_bytes(b"\n".join(lines(3)) + b"\n")
    assert spool.segments() == [refeed]
    assert spool.depth == 3
    kept = spool.replace(refeed, lines(1))
    assert (spool.depth, spool.segments()) == (1, [kept])
