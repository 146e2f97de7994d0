"""How a consumer's progress reads (pure logic): lag, last commit age, and when it is stalled."""

from __future__ import annotations

import time

import pytest
from aiokafka import TopicPartition

from shared.exactly_once.progress import Progress

pytestmark = pytest.mark.unit  # no server: `make test-unit`

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_lag_is_ends_minus_stored_offsets_over_the_assigned_partitions() -> None:
    p = Progress(stall_after_s=60)
    p.reassigned({P0, P1})
    p.positions({P0: 10, P1: 5})
    p.saw_ends([(P0, 25), (P1, None)])
    assert p.lag == 15  # P1's end is not known yet: not counted
    p.saw_ends([(P1, 7), (P0, 20)])  # an end never goes backwards
    assert p.lag == 17
    p.committed({P0: 25})
    assert p.lag == 2
    p.reassigned({P1})  # P0 moved to another member
    assert p.lag == 2


def test_stalled_only_with_lag_and_no_commit_for_the_set_time() -> None:
    p = Progress(stall_after_s=30)
    p.reassigned({P0})
    p.positions({P0: 0})
    p.saw_ends([(P0, 0)])  # caught up: idle, not stalled however long
    now = time.monotonic()
    assert not p.stalled(now + 3600)
    p.saw_ends([(P0, 4)])  # records arrive after an hour idle: not stalled at once
    assert not p.stalled(now + 10)
    assert p.stalled(now + 31)
    p.committed({P0: 2})
    assert p.last_commit_age(time.monotonic()) is not None
    assert not p.stalled(time.monotonic() + 29)
    assert p.stalled(time.monotonic() + 31)
    p.committed({P0: 4})  # caught up again
    assert not p.stalled(time.monotonic() + 3600)
