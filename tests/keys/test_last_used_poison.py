"""The key service's last_used consumer never stalls on a record (issue 9, part 3).

A record that is not a usage event, one whose key id PostgreSQL refuses (a NUL), and the
records of a key whose update the database refuses with a real data error (a trigger that
raises SQLSTATE 22023 for that key) go to the DLQ, found by splitting the batch; later
records, of the same partition and of another project, keep moving last_used_at.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from services.keys.settings import KeysSettings
from tests.keys.harness import Running, running
from tests.keys.test_last_used import usage
from tests.metering.poison import letters_by_group, send
from tests.polling import eventually

TRIGGER = """
CREATE FUNCTION refuse_poisoned() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name = 'poisoned' THEN
        RAISE EXCEPTION 'refused for the test' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poisoned BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_poisoned();
"""


async def test_poison_records_do_not_stop_last_used_at(
    keys_settings: KeysSettings, db: asyncpg.Connection
) -> None:
    settings = keys_settings.model_copy(update={"consume_usage": True, "last_used_batch": 50})
    async with running(settings) as keys:
        await _poison_records_do_not_stop_last_used_at(keys, db)


async def _poison_records_do_not_stop_last_used_at(keys: Running, db: asyncpg.Connection) -> None:
    project, other = await keys.project("one"), await keys.project("two")
    a, poisoned = await keys.key(project, "a"), await keys.key(project, "poisoned")
    b = await keys.key(other, "b")
    await db.execute(TRIGGER)
    now = datetime.now(UTC).replace(microsecond=0)
    a_id, p_id, b_id = a["id"].encode(), poisoned["id"].encode(), b["id"].encode()

    def at(minutes: int) -> datetime:
        return now - timedelta(minutes=60 - minutes)

    nul = json.loads(usage(a["id"], project, at(1)))
    nul["key_id"] = "key\u0000nul"
    bad = [
        (a_id, b"not json at all"),
        (a_id, json.dumps(nul).encode()),
        (p_id, usage(poisoned["id"], project, at(2))),
        (p_id, usage(poisoned["id"], project, at(3))),
    ]
    records = [(a_id, usage(a["id"], project, at(0))), *bad]
    records += [(a_id, usage(a["id"], project, at(10 + i))) for i in range(30)]
    records += [(b_id, usage(b["id"], other, at(40 + i))) for i in range(15)]
    positions = await send(keys.settings.kafka_bootstrap, keys.settings.usage_topic, records)

    async def last_used(project_id: str, key_id: str) -> int | None:
        got = (await keys.client.get(f"/v1/projects/{project_id}/keys/{key_id}")).json()
        value: int | None = got["last_used_at"]
        return value

    want_a, want_b = int(at(39).timestamp()), int(at(54).timestamp())
    await eventually(
        lambda: last_used(project, a["id"]), until=lambda v: v == want_a, timeout=30, what="a"
    )
    await eventually(
        lambda: last_used(other, b["id"]), until=lambda v: v == want_b, timeout=30, what="b"
    )
    assert await last_used(project, poisoned["id"]) is None
    group = keys.settings.consumer_group
    letters = (
        await letters_by_group(
            keys.settings.kafka_bootstrap, keys.settings.topic_prefix, {group: 4}
        )
    )[group]
    bad_at = {positions[records.index(r)] for r in bad}
    assert set(letters) == bad_at
    reasons = sorted(letters[p].reason for p in bad_at)
    refused = [r for r in reasons if r.startswith("database refused the record: 22023")]
    assert len(refused) == 2, reasons  # the trigger's, whatever the models accept
    assert all("refused" in r or "invalid usage event" in r for r in reasons), reasons
    ready = (await keys.client.get("/readyz")).json()
    assert ready["last_used_dead_letters"] == 4, ready
    await eventually(
        lambda: _lag(keys), until=lambda lag: lag == 0, timeout=10, what="lag back to 0"
    )


async def _lag(keys: Running) -> int:
    body = (await keys.client.get("/readyz")).json()
    return int(body["last_used_lag"])
