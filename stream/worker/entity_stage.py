"""Stage 1, the entity stage: one agent per input family, partitioned by entity key.

decode -> (wrong topic, key or partition: forward to its entity's partition of the event's own
topic, stream/worker/forwarding.py) -> dedupe + engine.apply -> the fact joins the partition's pending
facts (stream/worker/facts.py). At every flush instant of
the wall-clock grid (stream/stages/cadence.py) each changed scope's partial vector -- absolute,
not a delta -- goes to the partials topic, one message per scope-stage partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.core.assignments import TerritoryRep
from stream.core.clock import reference_instant_us
from stream.core.decode import Rejected, decode_event, rejection_record
from stream.core.engine import Family, KpiEngine, Outcome, family_of
from stream.core.events import partition_key
from stream.core.routing import TYPE_TOPIC
from stream.kafka import faust_internals
from stream.kafka.batches import BatchProducer
from stream.kafka.holes import OffsetGuard
from stream.kafka.wire_partials import (encode_groups, encode_partials, encode_targets, partials_message_key,
                                        scope_key_bytes, target_board_family)
from stream.kafka.wire_vectors import encode_vector
from stream.stages import waiting
from stream.stages.cadence import next_flush
from stream.stages.outgoing import Outgoing, key_partition
from stream.stages.waiting import WaitingCounts
from stream.worker.context import WorkerContext
from stream.worker.facts import FactLog
from stream.worker.forwarding import Arrival, forward_partition, forwarded
from stream.worker.snapshots import CoveredBatches

log = logging.getLogger(__name__)

# Input is handed to the agents in batches of up to this many events, or what arrived within the
# wait: faust's per-message delivery still runs for each event, but the handler then runs over the
# batch in one go (~15 % more events/s than one agent wake-up per event). The wait bounds what a
# lone event waits for company.
INPUT_BATCH_MAX = 500
INPUT_BATCH_WAIT_SECONDS = 0.01
# Scope partials per message to one scope-stage partition (~300 bytes each)
PARTIALS_PER_MESSAGE = 400

FAMILY_TOPICS = {
    Family.OUTLET: ("sales.outlets", "sales.orders", "sales.visits"),
    Family.LEAD: ("sales.leads",),
    Family.ACTIVITY: ("sales.activities",),
    Family.TARGET: ("sales.targets",),
}


class DeadLetterLog:
    """Dead letters in the log as a rate: each one at DEBUG, and at most one INFO line per `every`
    seconds with the counts by reason since the previous line (bad input comes in bursts of
    thousands; a line each buried everything else). The counts are also the metric
    kpi_stream_deadletters and the records are on the dead-letter topic."""

    def __init__(self, every: float = 60.0, clock=time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.since = clock()

    def note(self, reason: str) -> str | None:
        self.counts[reason] += 1
        return self.due()

    def due(self) -> str | None:
        """The summary line, when one is due (and resets the counts), else None."""
        now = self.clock()
        if not self.counts or now - self.since < self.every:
            return None
        by_reason = ", ".join(f"{reason} {count}" for reason, count in sorted(self.counts.items(),
                                                                               key=lambda item: (-item[1], item[0])))
        line = f"{sum(self.counts.values())} dead letters in the last {now - self.since:.0f}s: {by_reason}"
        self.counts.clear()
        self.since = now
        return line


@dataclass(slots=True)
class EntityPartition:
    engine: KpiEngine
    # Partials carry (generation, sequence): the consumer-group generation in which this engine
    # was built, then a counter. A new owner of the partition builds in a newer generation, so a
    # late partial from the previous owner never overwrites the new owner's. The counter starts
    # at the wall clock in microseconds: a static group member (KPI_GROUP_INSTANCE_ID) restarts
    # in the same generation, and its partials must still be newer than its previous process's.
    generation: int = 0
    sequence: int = field(default_factory=lambda: time.time_ns() // 1000)
    # Kafka timestamps of the events applied since the last flush (stream/stages/waiting.py)
    unsent_events: WaitingCounts = field(default_factory=dict)
    # the facts-table batches whose facts the engine holds: with the pending facts, exactly its
    # state (what a snapshot of it covers, stream/worker/snapshots.py)
    covered: CoveredBatches = field(default_factory=CoveredBatches)


class EntityStage:
    def __init__(self, ctx: WorkerContext, guard: OffsetGuard, batches: BatchProducer) -> None:
        self.ctx = ctx
        self.guard = guard
        self.batches = batches
        self.entities: dict[tuple[Family, int], EntityPartition] = {}
        self.facts: FactLog | None = None  # set by the app once its tables exist
        # records forwarded to their entity's partition and dead letters, queued while a batch is
        # handled, by topic: sent before faust acknowledges the batch (stream/worker/forwarding.py)
        self.forwards: dict[str, list[Outgoing]] = {}
        self.partition_counts: dict[str, int] = {}  # typed topic -> partitions, asked once
        self.repartitioned_counters: dict[str, Any] = {}
        self.misrouted_topics: set[str] = set()  # typed topics whose misplaced records were logged
        self.events_in_counters: dict[tuple[str, str], Any] = {}
        # labels() per event costs more than the increment: children looked up once
        self.late_correction_counters = {family: ctx.metrics.late_corrections.labels(family.value) for family in Family}
        self.input_delay = ctx.metrics.stage_delay.labels("input")
        self.deadletter_log = DeadLetterLog()

    def entity_partition(self, family: Family, partition: int) -> EntityPartition:
        entity = self.entities.get((family, partition))
        if entity is None:
            entity = self.entities[(family, partition)] = EntityPartition(
                KpiEngine(self.ctx.kpi, self.ctx.clock.now_us(), self.ctx.settings.hot_outlets),
                generation=faust_internals.generation(self.ctx.app))
        return entity

    def territory_rep_outlets(self) -> Iterator[Mapping[TerritoryRep, int]]:
        """Outlets per (territory, assigned rep) of each outlet partition held now."""
        for (family, _), entity in list(self.entities.items()):
            if family is Family.OUTLET:
                yield entity.engine.outlets.assignments.outlets()

    async def consume(self, stream, family: Family | None) -> None:
        """An agent's loop: `family` None is the router of the mixed topic sales.events.

        take_events, not take: the handler needs each message's partition, offset and timestamp.
        Tables are not written here (faust #497 forbids it in a batch); facts are written by the
        flush timer with explicit partitions. faust acks a batch after it is handled; commits
        follow the offset ledger either way."""
        async for events in stream.take_events(INPUT_BATCH_MAX, INPUT_BATCH_WAIT_SECONDS):
            for event in events:
                await self.handle(family, event.message)
            if self.forwards:
                await self.send_forwards()

    async def learn_partition_counts(self) -> None:
        """The typed topics' partition counts, asked before any record is admitted: the handler
        may not wait between admitting a record and taking its fact."""
        for name in sorted(set(TYPE_TOPIC.values())):
            topic = self.ctx.topics.input(name)
            self.partition_counts[topic] = await self.batches.partition_count(topic)
        if self.guard.deadletter_partitions is None:
            self.guard.deadletter_partitions = await self.batches.partition_count(self.ctx.topics.deadletter)

    async def send_forwards(self) -> None:
        """Queue the batch's forwarded records on the producer. Called before faust acknowledges
        the batch, so a commit past their sources -- which flushes the producer first -- implies
        they are written; a batch the broker refuses crashes the worker (BatchProducer)."""
        forwards, self.forwards = self.forwards, {}
        for topic, messages in forwards.items():
            if topic == self.ctx.topics.deadletter:
                await self.batches.send(topic, messages, self._deadletters_acked)
            else:
                await self.batches.send(topic, messages)

    def _deadletters_acked(self, partition: int, last_offset: int, messages: list[Outgoing]) -> None:
        self.guard.deadletters.note_acked(partition, last_offset)

    async def handle(self, family: Family | None, message) -> None:
        ctx, facts = self.ctx, self.facts
        # both checks pass for almost every event: only their slow paths await
        if not facts.has_room():
            await facts.wait_for_room()
        if not self.partition_counts:
            await self.learn_partition_counts()
        if not self.guard.admit_next(message) and not await self.guard.admit(message):
            return
        raw: bytes = message.value if message.value is not None else b""
        timestamp_ms = int(round(message.timestamp * 1000)) if message.timestamp else None
        ref_us = reference_instant_us(ctx.kpi.clock, timestamp_ms)
        try:
            event = decode_event(raw, ref_us, ctx.kpi)
        except Rejected as rejected:
            self._count_in(message.topic, "invalid")
            self._dead_letter(message, raw, rejected)
            return
        self._count_in(message.topic, event.type)
        if timestamp_ms is not None:
            ctx.tally.observe(self.input_delay, max(0.0, time.time() - timestamp_ms / 1000))
        target_family = family_of(event)
        key = partition_key(event)
        entity_key = key.encode()
        own_topic = ctx.topics.input(TYPE_TOPIC[event.type])
        arrival = Arrival(family, message.topic, message.partition, message.offset, message.key, timestamp_ms)
        target = forward_partition(arrival, target_family, entity_key, self.partition_counts[own_topic])
        if target is not None:
            self._forward(arrival, own_topic, entity_key, raw, target, message.headers)
            return
        entity = self.entity_partition(family, message.partition)
        engine = entity.engine
        outcome = engine.apply(event)  # dedupes first: one lookup, not a check and then apply's own
        if outcome is Outcome.DUPLICATE:
            ctx.metrics.ignored.labels("duplicate").inc()
            return
        if outcome in (Outcome.ALREADY_CLOSED, Outcome.DUPLICATE_ORDER):
            ctx.metrics.ignored.labels(outcome.value).inc()
        ctx.clock.observe(event.occurred_us)
        if event.occurred_us // ctx.kpi.slot_us < engine.slot:
            ctx.tally.count(self.late_correction_counters[family])
        # no await between the ledger's admission and this: the facts flush sees both or neither
        facts.add(family, message.partition, [key, event.event_id, event.ref_us, raw.decode()])
        if timestamp_ms is not None:
            waiting.note(entity.unsent_events, timestamp_ms)

    def _forward(self, arrival: Arrival, topic: str, entity_key: bytes, raw: bytes, partition: int, headers) -> None:
        """Forward the record to its entity's partition; it is applied there, not here."""
        self.forwards.setdefault(topic, []).append(forwarded(arrival, entity_key, raw, partition, headers or ()))
        counter = self.repartitioned_counters.get(arrival.topic)
        if counter is None:
            counter = self.repartitioned_counters[arrival.topic] = \
                self.ctx.metrics.repartitioned.labels(arrival.topic)
        self.ctx.tally.count(counter)
        if (arrival.family is not None and arrival.key == entity_key
                and arrival.topic not in self.misrouted_topics):
            self.misrouted_topics.add(arrival.topic)
            log.warning("%s[%s]@%s: record keyed %r belongs to partition %s (Kafka's default partitioner, "
                        "murmur2); its producer partitions another way (librdkafka's default is CRC32). Each "
                        "such record is forwarded to its key's partition and counted in "
                        "kpi_stream_records_repartitioned_total; said once per topic", arrival.topic,
                        arrival.partition, arrival.offset, entity_key[:80], partition)

    def _count_in(self, topic: str, event_type: str) -> None:
        counter = self.events_in_counters.get((topic, event_type))
        if counter is None:  # prometheus_client's labels() lookup is a large part of a cheap event
            counter = self.events_in_counters[(topic, event_type)] = self.ctx.metrics.events_in.labels(topic, event_type)
        self.ctx.tally.count(counter)

    def _dead_letter(self, message, raw: bytes, rejected: Rejected) -> None:
        """Queue the record's dead letter with the batch's forwards -- unless a previous owner of
        the partition wrote it before this worker re-read the record (stream/kafka/deadletters.py)."""
        source = (message.topic, message.partition)
        marks = self.guard.deadletters
        if marks.already_written(source, message.offset):
            self.ctx.metrics.deadletters_already_written.inc()
            log.debug("dead letter of %s[%s]@%s already written by the partition's previous owner",
                      message.topic, message.partition, message.offset)
            return
        record = rejection_record(
            raw, rejected.reason, rejected.detail,
            topic=message.topic, partition=message.partition, offset=message.offset,
        )
        partition = self.guard.deadletter_partition_of(message.tp)
        marks.note_sent(source, message.offset, partition)
        self.forwards.setdefault(self.ctx.topics.deadletter, []).append(
            Outgoing(partition, message.key, orjson.dumps(record)))
        self.ctx.metrics.deadletters.labels(rejected.reason).inc()
        log.debug("dead letter %s from %s[%s]@%s: %s", rejected.reason, message.topic,
                  message.partition, message.offset, rejected.detail)
        summary = self.deadletter_log.note(rejected.reason)
        if summary:
            log.info("%s", summary)

    # -- partials -------------------------------------------------------------------------------

    async def partials_loop(self, observe_published, scope_count) -> None:
        """`flush_partials` at every flush instant of the wall-clock grid (stream/stages/cadence.py),
        which every worker shares: a scope's partials from all of them reach stage 2 together. A
        loop, not a Faust timer: a timer keeps its own phase."""
        interval = self.ctx.settings.publish_interval_seconds
        while not self.ctx.app.should_stop:
            flush, flush_at = next_flush(time.time(), interval)
            await asyncio.sleep(flush_at - time.time())
            summary = self.deadletter_log.due()  # the last letters of a burst, too
            if summary:
                log.info("%s", summary)
            try:
                await self.flush_partials(flush, observe_published, scope_count)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the scopes stay dirty; the next flush sends them
                log.exception("partials flush failed")

    async def flush_partials(self, flush: int, observe_published, scope_count) -> None:
        """Send every scope whose vector moved since the last flush to the scope stage: one
        message per scope-stage partition per flush (split past PARTIALS_PER_MESSAGE), not one per
        scope -- each consumed message costs the scope stage a full trip through Faust."""
        if self.ctx.app.rebalancing:
            return
        partitions = await self.batches.partition_count(self.ctx.topics.partials)
        now_us = self.ctx.clock.now_us()
        by_destination: dict[int, list[list]] = {}
        events: WaitingCounts = {}  # applied since the last flush, in partitions that send
        for (family, partition), entity in list(self.entities.items()):
            engine = entity.engine
            engine.advance(now_us)
            applied, entity.unsent_events = entity.unsent_events, {}
            dirty = engine.take_dirty()
            if not dirty and not engine.targets.dirty:
                # nothing of theirs to publish: done now
                observe_published(waiting.pairs(applied), time.time())
                continue
            waiting.merge(events, applied)
            entity.sequence += 1
            for fam, scope, vector in dirty:
                destination = key_partition(scope_key_bytes((fam.value, scope[0], scope[1])), partitions)
                entry = [fam.value, scope[0], scope[1], partition, entity.generation, entity.sequence,
                         encode_vector(vector)]
                groups = engine.period_groups(fam, scope)
                if groups:
                    entry.append(encode_groups(groups, encode_vector))
                by_destination.setdefault(destination, []).append(entry)
            for fam, scope, targets in engine.take_dirty_targets():
                # routed with the scope of the targets' KPI family: the scope stage joins them there
                destination = key_partition(scope_key_bytes((fam.value, scope[0], scope[1])), partitions)
                by_destination.setdefault(destination, []).append(
                    [target_board_family(fam.value), scope[0], scope[1], partition, entity.generation, entity.sequence,
                     [], encode_targets(targets)])
        messages = []
        key = partials_message_key(self.facts.instance)
        for destination, entries in by_destination.items():
            for start in range(0, len(entries), PARTIALS_PER_MESSAGE):
                # the flush's events ride with one message only: each counted once
                carried = None if messages else waiting.encode(events)
                value = encode_partials(time.time_ns() // 1_000_000, flush,
                                        entries[start:start + PARTIALS_PER_MESSAGE], carried)
                messages.append(Outgoing(destination, key, value))
        await self.batches.send(self.ctx.topics.partials, messages)
        self.ctx.metrics.state_entities.labels("outlet").set(
            sum(len(e.engine.outlets) for (f, _), e in self.entities.items() if f is Family.OUTLET))
        self.ctx.metrics.state_entities.labels("lead").set(
            sum(len(e.engine.leads.leads) for (f, _), e in self.entities.items() if f is Family.LEAD))
        self.ctx.metrics.state_entities.labels("scope").set(scope_count())
