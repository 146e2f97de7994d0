"""A consumer group as the brokers see it: who holds which partitions, and which partitions
have carried events. The replica fault of the cluster test kills the replica that owns the
test's traffic (else the kill would test only a rebalance of idle partitions) and waits for
the group to hand its partitions on, then back.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from tests.polling import eventually

REBALANCE_S = 60.0  # a dead member's session (6 s here) and the rebalance after it


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await asyncio.wait_for(admin.start(), 10)
    return admin


async def assignment(bootstrap: str, group: str) -> dict[str, set[int]] | None:
    """Client id to the partitions it holds, once the group is stable; None meanwhile (or
    while the brokers do not answer). Asked of a fresh client each time, as after a restart."""
    try:
        admin = await _admin(bootstrap)
    except (KafkaError, OSError, TimeoutError):
        return None
    try:
        (response,) = await admin.describe_consumer_groups([group])
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        await admin.close()
    (described,) = response.to_object()["groups"]
    if described["error_code"] or described["state"] != "Stable":
        return None
    out: dict[str, set[int]] = {}
    for member in described["members"]:
        held = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
        out[member["client_id"]] = {tp.partition for tp in held.partitions()}
    return out


async def stable_with(bootstrap: str, group: str, members: int) -> dict[str, set[int]]:
    """Until the group is stable with this many members, every partition held by one."""

    def whole(held: dict[str, set[int]] | None) -> bool:
        if held is None or len(held) != members:
            return False
        partitions = [p for ps in held.values() for p in ps]
        return len(partitions) == len(set(partitions)) > 0

    got = await eventually(
        lambda: assignment(bootstrap, group),
        until=whole,
        timeout=REBALANCE_S,
        interval=0.5,
        what=f"{group} stable with {members} members",
    )
    assert got is not None
    return got


async def busy_partitions(bootstrap: str, group: str) -> set[int]:
    """Partitions whose offset the group has moved past zero: those that carried events."""
    admin = await _admin(bootstrap)
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition for tp, meta in offsets.items() if meta.offset > 0}
