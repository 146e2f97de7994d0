"""A consumer's progress as health sees it: lag, age of the last committed batch, stalled.

Lag is, summed over the partitions assigned, the partition's end offset minus the next
offset stored in PostgreSQL (our committed position). End offsets come from the fetches
(high watermarks) and from a periodic ``end_offsets`` request, so a consumer stuck on a
batch still sees records pile up behind it.

*Stalled* means: records are waiting (lag > 0) and nothing was committed for
``stall_after_s`` seconds since the consumer last had nothing to do. Counting from the last
time it was caught up (not from the last commit alone) keeps a consumer that was idle for
an hour from looking stalled the moment a record arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Positions and ends per partition, and the times that decide "stalled"."""

    stall_after_s: float
    stored: dict[TopicPartition, int] = field(default_factory=dict)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    assigned: set[TopicPartition] = field(default_factory=set)
    last_commit: float | None = None  # monotonic
    idle_since: float = field(default_factory=time.monotonic)  # last seen caught up

    def positions(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets now stored (from a seek, or a batch just committed); never backwards."""
        for tp, offset in offsets.items():
            self.stored[tp] = max(offset, self.stored.get(tp, 0))

    def guess(self, offsets: dict[TopicPartition, int]) -> None:
        """Positions from Kafka, for partitions whose PostgreSQL offset is not read yet."""
        for tp, offset in offsets.items():
            self.stored.setdefault(tp, offset)

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """A batch committed these next offsets."""
        self.positions(offsets)
        self.last_commit = time.monotonic()
        self._check_idle()

    def saw_ends(self, ends: Iterable[tuple[TopicPartition, int | None]]) -> None:
        """End offsets (high watermarks) seen by a fetch or asked of the broker."""
        for tp, end in ends:
            if end is not None:
                self.ends[tp] = max(end, self.ends.get(tp, 0))
        self._check_idle()

    def reassigned(self, assigned: set[TopicPartition]) -> None:
        """A rebalance gave us these partitions; their positions come with the next seek."""
        self.assigned = set(assigned)
        for tp in list(self.stored):
            if tp not in assigned:
                del self.stored[tp]
        self.idle_since = time.monotonic()

    @property
    def lag(self) -> int:
        """Records on the assigned partitions not committed yet (0 for unknown ones)."""
        return sum(
            max(0, self.ends[tp] - self.stored[tp])
            for tp in self.assigned
            if tp in self.ends and tp in self.stored
        )

    def last_commit_age(self, now: float | None = None) -> float | None:
        """Seconds since the last committed batch, or None before the first."""
        if self.last_commit is None:
            return None
        return (time.monotonic() if now is None else now) - self.last_commit

    def stalled(self, now: float | None = None) -> bool:
        """Records wait and nothing was committed for stall_after_s (since last caught up)."""
        now = time.monotonic() if now is None else now
        since = max(self.idle_since, self.last_commit or 0.0)
        return self.lag > 0 and now - since > self.stall_after_s

    def _check_idle(self) -> None:
        if self.lag == 0:
            self.idle_since = time.monotonic()

    def as_dict(self) -> dict[str, Any]:
        """The health view: lag, age of the last commit, stalled."""
        age = self.last_commit_age()
        return {
            "lag": self.lag,
            "last_commit_age_s": None if age is None else round(age, 3),
            "stalled": self.stalled(),
        }


async def watch_ends(consumer: AIOKafkaConsumer, progress: Progress, interval_s: float) -> None:
    """Ask the broker for end offsets now and then: a stuck batch fetches no watermarks."""
    while True:
        await asyncio.sleep(interval_s)
        assigned = list(consumer.assignment())
        if not assigned:
            continue
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(assigned), 10)
            # A consumer stuck before its first seek (offsets table unreadable) has no
            # position yet: Kafka's committed offset, or the beginning, stands in.
            unknown = [tp for tp in assigned if tp not in progress.stored]
            if unknown:
                starts = await asyncio.wait_for(consumer.beginning_offsets(unknown), 10)
                for tp in unknown:
                    kafka = await asyncio.wait_for(consumer.committed(tp), 10)
                    progress.guess({tp: starts[tp] if kafka is None else kafka})
        except Exception as exc:  # monitoring only: never let it stop the consumer
            log.debug("end offsets unavailable", extra={"error": repr(exc)})
            continue
        progress.saw_ends(ends.items())
