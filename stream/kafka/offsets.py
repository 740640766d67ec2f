"""Which offsets of each consumed topic-partition this worker has applied, strictly in order.

Why this exists: faust-streaming 0.15.3 can deliver a partition's messages starting *past*
offsets it never delivered, and then commit past them. Seen in the crash tests: after a
rebalance, a partition with no committed offset yet (faust treats committed 0 the same) is not
sought back, a batch fetched before the seek arrives starting at offset 500, and faust's commit
check -- "the lowest acked offset must follow the committed one" -- is skipped when the committed
offset is None or 0. Those 500 events were never applied and never re-read.

So the agents admit each message through an `OffsetLedger`: a message at the partition's next
offset is applied; one below it was applied already (a re-read after a seek); one above it means
a hole -- skipped, and the partition is sought back to the hole (re-reading is harmless: applying
an event is idempotent). Offsets are committed only up to the next unapplied offset.

Before seeking, a hole is checked against the log itself (PROBE): if the broker's first record
at or after the hole is further on, the hole is a real gap (transaction markers, a compacted
topic) and `skip_to` accepts it; if the record is there, the worker seeks back. Faust's own
read-offset filter can defeat a seek while records of an older fetch are still being delivered,
so while the hole stays open it is probed and sought again every `retry_after` seconds. No Faust or
Kafka imports: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Hashable


class Admission(Enum):
    APPLY = "apply"  # the next offset: apply it
    REPEAT = "repeat"  # applied already in this assignment (or committed before it): skip
    PROBE = "probe"  # a hole before this offset: skip it; a real gap in the log, or seek back?
    WAIT = "wait"  # a hole, and a seek back is under way: skip it


@dataclass(slots=True)
class PartitionCursor:
    next_offset: int
    last_probe_at: float = float("-inf")
    # for partitions whose applied events are persisted later, in batches: the offset up to which
    # they are (None: persisted as they are applied)
    durable_offset: int | None = None


class OffsetLedger:
    def __init__(self, retry_after: float = 3.0) -> None:
        self.retry_after = retry_after
        self.cursors: dict[Hashable, PartitionCursor] = {}

    def known(self, tp: Hashable) -> bool:
        return tp in self.cursors

    def start(self, tp: Hashable, next_offset: int, persisted_later: bool = False) -> None:
        """The partition was (re)assigned: offsets below `next_offset` are committed. With
        `persisted_later`, nothing past it may be committed until `mark_durable` says so."""
        self.cursors[tp] = PartitionCursor(next_offset, durable_offset=next_offset if persisted_later else None)

    def mark_durable(self, tp: Hashable, offset: int) -> None:
        """What was applied below `offset` is persisted now."""
        cursor = self.cursors.get(tp)
        if cursor is not None and cursor.durable_offset is not None:
            cursor.durable_offset = max(cursor.durable_offset, min(offset, cursor.next_offset))

    def forget(self, tps) -> None:
        for tp in tps:
            self.cursors.pop(tp, None)

    def next_offset(self, tp: Hashable) -> int | None:
        cursor = self.cursors.get(tp)
        return None if cursor is None else cursor.next_offset

    def admit_next(self, tp: Hashable, offset: int) -> bool:
        """The common case, cheaply: `offset` is the partition's next one (then it is admitted,
        as APPLY). False means "ask `admit`" -- including a partition not started yet."""
        cursor = self.cursors.get(tp)
        if cursor is None or offset != cursor.next_offset:
            return False
        cursor.next_offset = offset + 1
        return True

    def admit(self, tp: Hashable, offset: int, now: float) -> tuple[Admission, int]:
        """Decide what to do with the message at `offset`; also returns the expected offset."""
        cursor = self.cursors[tp]
        expected = cursor.next_offset
        if offset == expected:
            cursor.next_offset = offset + 1
            return Admission.APPLY, expected
        if offset < expected:
            return Admission.REPEAT, expected
        if now - cursor.last_probe_at < self.retry_after:
            return Admission.WAIT, expected
        cursor.last_probe_at = now
        return Admission.PROBE, expected

    def skip_to(self, tp: Hashable, next_offset: int) -> None:
        """The log has no records from the cursor up to `next_offset`: a real gap."""
        cursor = self.cursors[tp]
        cursor.next_offset = max(cursor.next_offset, next_offset)
        cursor.last_probe_at = float("-inf")

    def commit_limit(self, tp: Hashable) -> int | None:
        """The highest offset that may be committed (exclusive), None if nothing is known."""
        cursor = self.cursors.get(tp)
        if cursor is None:
            return None
        return cursor.next_offset if cursor.durable_offset is None else cursor.durable_offset
