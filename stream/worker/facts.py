"""Stage 1's facts: the accepted raw events, written to the facts tables in batches.

An applied event's fact is pending until the next flush, then in flight until Kafka acknowledges
its batch, then covered (in the table, held by the engine). Offsets are committed only past
written facts, and consumption waits while too many facts are unwritten (backpressure).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from typing import Callable

from stream.core.engine import Family
from stream.kafka.offsets import OffsetLedger
from stream.kafka.tables import ChangelogWriter
from stream.kafka.wire_facts import Fact, encode_fact_batch
from stream.stages.outgoing import Outgoing

log = logging.getLogger(__name__)

# Facts are written this often, at most this many per changelog message (~300 bytes each).
FACT_FLUSH_SECONDS = 0.25
FACTS_PER_MESSAGE = 500
# Facts applied but not acknowledged by Kafka yet: past this many, consumption waits (~400 bytes
# each), so a slow or throttled Kafka holds consumption back instead of filling memory.
FACT_BACKLOG_LIMIT = 5_000

PartitionKey = tuple[Family, int]
BatchId = tuple[str, int]


class FactLog:
    def __init__(self, ledger: OffsetLedger, entity_topics: set[str], writer: ChangelogWriter, tables: dict,
                 covered_of: Callable[[PartitionKey], object | None], backpressure_counter) -> None:
        self.ledger = ledger
        self.entity_topics = entity_topics
        self.writer = writer
        self.tables = tables  # Family -> its facts table
        self.covered_of = covered_of  # (family, partition) -> the engine's CoveredBatches, if held
        self.backpressure_counter = backpressure_counter
        self.instance = uuid.uuid4().hex[:12]  # keeps this process's batch keys apart from others'
        self.batches_written = 0
        # (family, partition) -> facts applied but not yet in a batch
        self.pending: dict[PartitionKey, list[Fact]] = {}
        self.pending_count = 0
        self.unwritten = 0  # pending, or sent and not acknowledged yet
        # (family, partition) -> {batch key: (batch id, facts)} sent and not acknowledged yet:
        # applied, but in no table
        self.in_flight: dict[PartitionKey, dict[bytes, tuple[BatchId, list[Fact]]]] = {}
        self.held_back_until = float("-inf")  # monotonic end of the last backpressure wait

    def has_room(self) -> bool:
        return self.unwritten < FACT_BACKLOG_LIMIT

    async def wait_for_room(self) -> None:
        """Wait while FACT_BACKLOG_LIMIT facts are unwritten; with room, return at once and record
        no wait (a recorded wait makes the lag observer skip its stall checks for a round)."""
        if self.has_room():
            return
        waited_since = time.monotonic()
        while self.unwritten >= FACT_BACKLOG_LIMIT:
            await asyncio.sleep(FACT_FLUSH_SECONDS / 5)
        self.held_back_until = time.monotonic()
        self.backpressure_counter.inc(self.held_back_until - waited_since)

    def held_back(self, within_seconds: float) -> bool:
        """Consumption waits, or waited within the last `within_seconds`, for Kafka to acknowledge facts."""
        return (self.unwritten >= FACT_BACKLOG_LIMIT
                or time.monotonic() - self.held_back_until < within_seconds)

    def add(self, family: Family, partition: int, fact: Fact) -> None:
        self.pending.setdefault((family, partition), []).append(fact)
        self.pending_count += 1
        self.unwritten += 1

    def pend_again(self, family: Family, partition: int, facts: list[Fact]) -> None:
        """Facts a snapshot's engine holds that never reached the facts table: written again with
        the next flush (their events' offsets were not committed; re-read, they are duplicates)."""
        if not facts:
            return
        self.pending.setdefault((family, partition), [])[:0] = facts
        self.pending_count += len(facts)
        self.unwritten += len(facts)

    def drop_pending(self, revoked: Callable[[PartitionKey], bool]) -> None:
        """Pending facts of revoked partitions go: the next owner re-reads their events."""
        for key in [key for key in self.pending if revoked(key)]:
            del self.pending[key]
        dropped = self.pending_count - sum(len(facts) for facts in self.pending.values())
        self.pending_count -= dropped
        self.unwritten -= dropped

    def pending_of(self, family: Family, partition: int) -> list[Fact]:
        return list(self.pending.get((family, partition), ()))

    def in_flight_of(self, family: Family, partition: int) -> dict[BatchId, list[Fact]]:
        return dict(self.in_flight.get((family, partition), {}).values())

    async def flush(self, all_batched: Callable[[], None]) -> None:
        """Write the facts applied since the last flush, a few hundred per changelog message, then
        let their offsets be committed. The offsets are taken together with the facts, with no
        await in between: every offset below them is either in a batch on its way or was never a
        fact (duplicate, dead letter, routed). `all_batched` runs when every applied fact is in a
        batch, before any is sent (a snapshot taken then needs nothing that happens later).

        A batch enters the local table store only when Kafka has acknowledged it (then its
        changelog offset is recorded): the store is never ahead of its changelog, so an on-disk
        store is trusted after a kill too (stream/kafka/local_tables.py)."""
        if not self.pending:
            all_batched()
            return
        batches, self.pending = self.pending, {}
        self.pending_count = 0
        durable = {tp: self.ledger.next_offset(tp) for tp in list(self.ledger.cursors) if tp.topic in self.entity_topics}
        writes = []
        for (family, partition), facts in batches.items():
            flying = self.in_flight.setdefault((family, partition), {})
            entries = []
            for start in range(0, len(facts), FACTS_PER_MESSAGE):
                self.batches_written += 1
                chunk = facts[start:start + FACTS_PER_MESSAGE]
                key, value = encode_fact_batch(partition, self.instance, self.batches_written, chunk)
                flying[key] = ((self.instance, self.batches_written), chunk)
                entries.append((key, value, len(chunk)))
            writes.append((family, partition, entries))
        all_batched()
        for family, partition, entries in writes:
            await self.writer.send(self.tables[family], partition, entries,
                                   functools.partial(self._written, family), store_when_written=True)
        for tp, offset in durable.items():
            if offset is not None:
                self.ledger.mark_durable(tp, offset)

    def _written(self, family: Family, partition: int, messages: list[Outgoing]) -> None:
        self.unwritten -= sum(message.items for message in messages)
        flying = self.in_flight.get((family, partition), {})
        covered = self.covered_of((family, partition))
        for message in messages:
            landed = flying.pop(message.key, None)
            if landed is not None and covered is not None:
                covered.add(landed[0])
