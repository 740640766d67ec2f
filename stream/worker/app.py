"""The Faust wiring: thin agents around the pure engine.

Stage 1 (entity stage), one agent per input family, partitioned by entity key:
    decode -> dedupe + engine.apply -> the accepted raw event joins the partition's pending
    facts, written to a facts table in batches every FACT_FLUSH_SECONDS (offsets are committed
    only past written facts; a rebuild applies each (entity, event_id, reference instant) once,
    so a fact re-read after a crash and written twice counts once) -> a timer sends each
    changed scope's partial vector (absolute, not a delta) to the partials topic, to the
    partition of its scope key, one message per partition per flush (one flush per interval,
    on the wall clock's grid: stream/stages/cadence.py).
Stage 2 (scope stage), partitioned by scope: keeps the latest partial vector per source
    partition in a table, sums them, evaluates the KPIs and, checking every twentieth of the
    interval, publishes each changed scope at most once per interval to kpi.updates, Redis and
    the gauges (the values that moved, as messages: stream/stages/publication.py). Output goes to Kafka
    as record batches (stream/kafka/batches.py).
Recovery: the facts tables are changelog-backed; after recovery each assigned partition's
engine is rebuilt by re-applying its stored facts (facts commute: the result does not depend on
their order), and all its scopes are sent again. Partials are absolute, so resending is harmless.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import faust
import orjson
from aiokafka.structs import TopicPartition
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream.stages.cadence import (age_refresh_due, due_for_publication, flush_period, flush_published, next_flush,
                      publish_tick)
from stream.core.clock import Clock, clock_for, reference_instant_us
from stream.kafka.batches import BatchProducer, Outgoing, key_partition
from stream.core.config import ServiceSettings
from stream.core.decode import Rejected, decode_event, rejection_record
from stream.kafka.delivery import deliver_without_racing_tasks
from stream.core.gcpause import collect_young_less_often, cyclic_gc_paused, freeze_long_lived
from stream.core.jsonbytes import kept
from stream.core.engine import Family, KpiEngine, Layouts, Outcome, evaluate_family, family_of
from stream.core.events import partition_key
from stream.kafka.offsets import Admission, OffsetLedger
from stream.core.outlets import keep_hot_outlets
from stream.worker.metrics import MetricTally, ProcessorMetrics, build_processor_metrics
from stream.stages.publication import Publisher, RoundOutput
from stream.worker.sinks import KpiGauges, RedisSink
from stream.worker.snapshots import (BackgroundSaver, CoveredBatches, EngineSnapshot, SnapshotShelf, batch_id, engine_fingerprint,
                        is_batch_key, missing_batches)
from stream.kafka.topics import TopicNames
from stream.stages.updates import round_stamp
from stream.kafka.wire_vectors import decode_vector, encode_vector
from stream.stages import waiting
from stream.stages.waiting import WaitingCounts

log = logging.getLogger(__name__)
# Facts are written this often, at most this many per changelog message (~300 bytes each).
FACT_FLUSH_SECONDS = 0.25
SEEK_TIMEOUT_SECONDS = 10.0
FACTS_PER_MESSAGE = 500
# Scope partials per message to one scope-stage partition (~300 bytes each)
PARTIALS_PER_MESSAGE = 400
# updates a publication round evaluates before it sends them and lets the event loop run
PUBLISH_CHUNK = 1_000
# Facts applied but not acknowledged by Kafka yet: past this many, consumption waits (~400 bytes
# each), so a slow or throttled Kafka holds consumption back instead of filling memory.
FACT_BACKLOG_LIMIT = 5_000
# After a rebuild that restored or re-applied state (the snapshot files it found are used up),
# the next background snapshot comes this soon, or at KPI_SNAPSHOT_INTERVAL if that is sooner.
SNAPSHOT_AFTER_REBUILD_SECONDS = 60.0
LAG_ROUND_SECONDS = 5.0  # how often `_observe_lag` samples each partition's progress
# Lag rounds (5 s each) a partition with records in the consumer's fetch buffer may go without a
# delivery before the stall checks act: turns come within seconds at saturation (bench/README.md)
TURN_WAIT_ROUNDS = 6
# Input is handed to the agents in batches of up to this many events, or what arrived within
# the wait: faust's per-message delivery still runs for each event, but our handler then runs over
# the batch in one go -- measured ~15 % more events/s than one agent wake-up per event
# (bench/README.md). The wait bounds what a lone event waits for company.
INPUT_BATCH_MAX = 500
INPUT_BATCH_WAIT_SECONDS = 0.01
# Room for a publication round's updates or a fact batch in a few record batches
PRODUCER_BATCH_BYTES = 256 * 1024
_METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"

FAMILY_TOPICS = {
    Family.OUTLET: ("sales.outlets", "sales.orders", "sales.visits"),
    Family.LEAD: ("sales.leads",),
    Family.ACTIVITY: ("sales.activities",),
}
TYPE_TOPIC = {
    "outlet.onboarded": "sales.outlets", "outlet.updated": "sales.outlets",
    "order.placed": "sales.orders", "visit.completed": "sales.visits",
    "lead.created": "sales.leads", "lead.updated": "sales.leads", "lead.won": "sales.leads",
    "lead.lost": "sales.leads", "activity.logged": "sales.activities",
}


def sum_vectors(vectors) -> list:
    vectors = list(vectors)
    total = list(vectors[0])
    for vector in vectors[1:]:
        for index, x in enumerate(vector):
            if x:
                total[index] += x
    return total


@dataclass(slots=True)
class EntityPartition:
    engine: KpiEngine
    # Partials carry (generation, sequence): the consumer-group generation in which this engine
    # was built, then a counter. A new owner of the partition builds in a newer generation, so a
    # late partial from the previous owner can never overwrite the new owner's. The counter starts
    # at the wall clock in microseconds: a static group member (KPI_GROUP_INSTANCE_ID) restarts
    # in the same generation, and its partials must still be newer than its previous process's.
    generation: int = 0
    sequence: int = field(default_factory=lambda: time.time_ns() // 1000)
    # Kafka timestamps of the events applied since the last flush (stream/stages/waiting.py)
    unsent_events: WaitingCounts = field(default_factory=dict)
    # the facts-table batches whose facts the engine holds: with the pending facts, exactly its
    # state (what a snapshot of it covers, stream/worker/snapshots.py)
    covered: CoveredBatches = field(default_factory=CoveredBatches)


@dataclass(slots=True)
class ScopePartials:
    """A scope's latest partial vector from each source partition. The vectors are tuples: the
    cyclic GC stops walking a tuple of numbers and strings after its first pass, but walks every
    element of a list in each full collection (two vectors of ~200 fields per source and scope)."""

    own_partition: int
    by_source: dict[int, tuple] = field(default_factory=dict)
    encoded: dict[str, tuple] = field(default_factory=dict)  # by_source as stored: JSON-ready, keyed by str
    versions: dict[int, tuple[int, int]] = field(default_factory=dict)

    def keep(self, source: int, version: tuple[int, int], encoded_vector: list) -> None:
        """`source`'s partial (as JSON carries it) becomes the one this scope sums."""
        self.by_source[source] = tuple(decode_vector(encoded_vector))
        self.encoded[str(source)] = tuple(encoded_vector)
        self.versions[source] = version


class KpiWorker:
    """Builds the Faust app for one ServiceSettings; holds the in-memory side of both stages."""

    def __init__(self, settings: ServiceSettings, metrics: ProcessorMetrics | None = None) -> None:
        self.settings = settings
        self.kpi = settings.kpi
        keep_hot_outlets(settings.hot_outlets)
        self.metrics = metrics or build_processor_metrics()
        self.clock: Clock = clock_for(settings.kpi.clock)
        self.layouts = Layouts.build(settings.kpi)
        self.topics = TopicNames(settings.topic_prefix, settings.app_id)
        self.entities: dict[tuple[Family, int], EntityPartition] = {}
        self.scopes: dict[tuple[str, str, str], ScopePartials] = {}
        self.dirty_scopes: set[tuple[str, str, str]] = set()
        # scope -> the applied events (stream/stages/waiting.py) observed in the publish latency when
        # this scope is next published: a flush's events ride with the first scope of one message
        self.scope_waiting_events: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        # scope -> time.time() of the first partials received since its last publication
        self.scope_received_at: dict[tuple[str, str, str], float] = {}
        # scope -> the newest flush (stream/stages/cadence.py) its received partials come from, and the
        # flush it was last published for: a key is published at most once per flush period
        self.scope_pending_flush: dict[tuple[str, str, str], int] = {}
        self.scope_published_flush: dict[tuple[str, str, str], int] = {}
        # scope -> the summed vector its values were last evaluated from (see _publish_round); a
        # tuple, which the cyclic GC stops walking, as ScopePartials' vectors and published values
        self.evaluated_vectors: dict[tuple[str, str, str], tuple] = {}
        self.age_refreshed_flush: int | None = None
        self.gauges = KpiGauges(self.metrics.registry, settings.export_scopes)
        self.publisher = Publisher(self.gauges)
        self.redis: RedisSink | None = None
        self.recovered = False
        self.heap_frozen = False  # once, when first recovered: see freeze_long_lived
        self.kafka_up = True
        self.last_as_of_us: int | None = None
        self.ledger = OffsetLedger()
        self.events_in_counters: dict[tuple[str, str], Any] = {}
        # labels() per event costs more than the increment: children looked up once
        self.late_correction_counters = {family: self.metrics.late_corrections.labels(family.value) for family in Family}
        self.input_delay = self.metrics.stage_delay.labels("input")
        self.tally = MetricTally()  # per-event counts, added to their series before each scrape
        self.partials_delay = self.metrics.stage_delay.labels("partials")
        self.publication_delay = self.metrics.stage_delay.labels("publication")
        # (family, partition) -> facts applied but not yet written to the facts table: written
        # in batches by `_flush_facts`, and offsets are committed only past written facts
        self.pending_facts: dict[tuple[Family, int], list[list]] = {}
        self.pending_fact_count = 0
        self.unwritten_facts = 0  # pending, or sent and not acknowledged yet
        # (family, partition) -> {batch key: (batch id, facts)} sent to the facts changelog and
        # not acknowledged yet: applied, but in no table (see `_flush_facts`)
        self.facts_in_flight: dict[tuple[Family, int], dict[bytes, tuple[tuple[str, int], list[list]]]] = {}
        self.fact_batches = 0
        self.instance = uuid.uuid4().hex[:12]  # keeps this process's batch keys apart from others'
        # tp -> ((applied up to, highwater) at the last lag round, rounds it has not moved)
        self.lag_seen: dict[Any, tuple[tuple[int, int], int]] = {}
        self.undelivered_rounds: dict[Any, int] = {}  # tp -> lag rounds assigned with nothing delivered
        self.held_back_until = float("-inf")  # monotonic end of the last backpressure wait
        self.metrics.facts_unacknowledged.set_function(lambda: self.unwritten_facts)
        self.app = self._build_app()
        owner = f"app {settings.app_id}, topic prefix {settings.topic_prefix!r}, {settings.partitions} partitions"
        self.snapshots = SnapshotShelf(Path(self.app.conf.appdir) / "engine-snapshots",
                                       engine_fingerprint(self.kpi, owner))
        self.saver = BackgroundSaver(self.snapshots)
        # (family, partition) -> the engine this worker held until a rebalance revoked it, as a
        # snapshot: the next rebuild restores it if the partition comes back (eager rebalancing
        # revokes every partition, also those that stay), and drops the others
        self.parked: dict[tuple[Family, int], EngineSnapshot] = {}
        # (changelog tp, recorded offset) where a gap left a store's offset behind: logged once
        self.changelog_gaps: set[tuple[Any, int]] = set()
        self.next_snapshot_at = float("inf")  # monotonic; set once recovered (see _snapshot_if_due)

    # -- app -----------------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{host}" for host in s.kafka_bootstrap.split(",")],
            broker_credentials=_credentials(s),
            store=s.store,
            datadir=s.state_dir,
            env_prefix="KPI_FAUST_",
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            topic_allow_declare=True,
            key_serializer="raw",
            value_serializer="raw",
            consumer_auto_offset_reset="earliest",
            web_enabled=True,
            web_port=s.web_port,
            web_bind=s.web_host,
            web_host="localhost",
            broker_max_poll_records=500,
            broker_session_timeout=s.session_timeout_seconds,
            consumer_group_instance_id=s.group_instance_id or None,
            broker_heartbeat_interval=max(0.5, s.session_timeout_seconds / 10),
            producer_acks=-1,
            table_cleanup_interval=3600.0,
            # No standby replicas: state is rebuilt from the changelog on every assignment anyway,
            # and faust 0.15.3's standby recovery crashed a worker in the rebalance test (seeking
            # a standby partition during a second rebalance: "Offset must be a positive integer").
            table_standby_replicas=0,
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
        )
        self.batches = BatchProducer(lambda: app.producer._ensure_producer(), self._on_lost_output)
        _drain_producer_buffer_fully(app.producer.buffer)
        _consumer_follows_the_ledger(app, self.ledger, self._agent_topics())
        fetch_like_the_worker(app, s.fetch_max_wait_ms, s.fetch_min_bytes)
        t = self.topics
        self.deadletter_topic = app.topic(t.deadletter, internal=False)
        self.partials_topic = app.topic(t.partials, partitions=s.partitions, internal=True, schema=BytesAsFetched())
        self.typed_topics = {name: app.topic(t.input(name), schema=BytesAsFetched()) for name in TYPE_TOPIC.values()}
        self.entity_topics = {t.input(name) for names in FAMILY_TOPICS.values() for name in names}
        self.fact_tables = {
            family: app.Table(f"{family.value}-facts", default=None, partitions=s.partitions, schema=_raw_schema(),
                              options=_on_disk_store_options())
            for family in Family
        }
        self.partials_table = app.Table("scope-partials", default=None, partitions=s.partitions, schema=_raw_schema(),
                                        options=_on_disk_store_options())

        for family, names in FAMILY_TOPICS.items():
            topic = app.topic(*[t.input(name) for name in names], schema=BytesAsFetched())
            app.agent(topic, name=f"{family.value}-stage")(self._make_entity_agent(family))
            self.fact_tables[family].on_recover(self._crash_on_error(self._make_rebuild(family)))
        router_topic = app.topic(t.input("sales.events"), schema=BytesAsFetched())
        app.agent(router_topic, name="router")(self._route_agent)
        app.agent(self.partials_topic, name="scope-stage")(self._scope_agent)
        self.partials_table.on_recover(self._crash_on_error(self._rebuild_scopes))
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._save_snapshots)
        app.timer(FACT_FLUSH_SECONDS, name="flush-facts")(self._flush_facts)
        app.task(self._partials_loop)
        app.task(self._publish_loop)
        app.timer(LAG_ROUND_SECONDS, name="observe-lag")(self._observe_lag)
        app.timer(2.0, name="check-kafka")(self._check_kafka)
        app.service(self._redis_service())
        self._add_pages(app)
        return app

    # -- stage 1 -------------------------------------------------------------------------------

    def _make_entity_agent(self, family: Family):
        async def entity_agent(stream):
            await self._consume_in_batches(stream, family)
        entity_agent.__name__ = f"{family.value}_stage"
        return entity_agent

    async def _route_agent(self, stream) -> None:
        await self._consume_in_batches(stream, None)

    async def _consume_in_batches(self, stream, family: Family | None) -> None:
        # take_events, not take: the handler needs each message's partition, offset and
        # timestamp. Tables are not written here (faust #497 forbids it in a batch); facts are
        # written by the flush timer with explicit partitions. faust acks a batch after it is
        # handled; commits follow the offset ledger either way.
        async for events in stream.take_events(INPUT_BATCH_MAX, INPUT_BATCH_WAIT_SECONDS):
            for event in events:
                await self._handle_input(family, event.message)

    async def _handle_input(self, family: Family | None, message) -> None:
        if self.unwritten_facts >= FACT_BACKLOG_LIMIT:  # backpressure, see FACT_BACKLOG_LIMIT
            waited_since = time.monotonic()
            while self.unwritten_facts >= FACT_BACKLOG_LIMIT:
                await asyncio.sleep(FACT_FLUSH_SECONDS / 5)
            self.held_back_until = time.monotonic()
            self.metrics.backpressure.inc(self.held_back_until - waited_since)
        if not self.ledger.admit_next(message.tp, message.offset) and not await self._admit(message):
            return
        raw: bytes = message.value if message.value is not None else b""
        timestamp_ms = int(round(message.timestamp * 1000)) if message.timestamp else None
        ref_us = reference_instant_us(self.kpi.clock, timestamp_ms)
        try:
            event = decode_event(raw, ref_us, self.kpi)
        except Rejected as rejected:
            self._count_in(message.topic, "invalid")
            await self._dead_letter(message, raw, rejected)
            return
        self._count_in(message.topic, event.type)
        if timestamp_ms is not None:
            self.tally.observe(self.input_delay, max(0.0, time.time() - timestamp_ms / 1000))
        target_family = family_of(event)
        key = partition_key(event)
        if family is not target_family or message.key != key.encode():
            # Wrong topic or wrong key for this event: re-key it onto its own topic so the state
            # of one entity always lives in one partition. The timestamp travels with it.
            await self.typed_topics[TYPE_TOPIC[event.type]].send(
                key=key.encode(), value=raw, timestamp=message.timestamp
            )
            return
        entity = self._entity_partition(family, message.partition)
        engine = entity.engine
        outcome = engine.apply(event)  # dedupes first: one lookup, not a check and then apply's own
        if outcome is Outcome.DUPLICATE:
            self.metrics.ignored.labels("duplicate").inc()
            return
        if outcome is Outcome.ALREADY_CLOSED:
            self.metrics.ignored.labels("already_closed").inc()
        self.clock.observe(event.occurred_us)
        if event.occurred_us // self.kpi.slot_us < engine.slot:
            self.tally.count(self.late_correction_counters[family])
        # no await between the ledger's admission and this append: `_flush_facts` sees both or neither
        self.pending_facts.setdefault((family, message.partition), []).append(
            [key, event.event_id, event.ref_us, raw.decode()])
        self.pending_fact_count += 1
        self.unwritten_facts += 1
        if timestamp_ms is not None:
            waiting.note(entity.unsent_events, timestamp_ms)

    def _count_in(self, topic: str, event_type: str) -> None:
        counter = self.events_in_counters.get((topic, event_type))
        if counter is None:  # prometheus_client's labels() lookup is a large part of a cheap event
            counter = self.events_in_counters[(topic, event_type)] = self.metrics.events_in.labels(topic, event_type)
        self.tally.count(counter)

    async def _admit(self, message) -> bool:
        """Apply each consumed partition's offsets strictly in order (see stream/kafka/offsets.py)."""
        tp = message.tp
        if not self.ledger.known(tp):
            generation = self._generation()
            start = await self._committed_or_earliest(tp)
            if self._generation() != generation or tp not in self.app.consumer.assignment():
                return False  # rebalanced while we asked: the next assignment starts afresh
            self.ledger.start(tp, start, persisted_later=tp.topic in self.entity_topics)
        admission, expected = self.ledger.admit(tp, message.offset, time.monotonic())
        if admission is Admission.APPLY:
            return True
        if admission is Admission.PROBE:
            what = f"delivered offset {message.offset} before {expected}..{message.offset - 1} were applied"
            if await self._resolve_hole(tp, expected, what) and message.offset >= self.ledger.next_offset(tp):
                return await self._admit(message)  # a real gap, now skipped: this one may be next
        return False

    async def _resolve_hole(self, tp, start: int, what: str) -> bool:
        """Offsets from `start` on were not applied: ask the log. No records there (transaction
        markers, compaction): accept the gap and return True. Records there, or no clear answer
        (a slow broker): seek back to `start` -- re-reading is harmless -- and return False."""
        try:
            first = await _bounded(self._first_offset_in_log(tp, start), SEEK_TIMEOUT_SECONDS)
        except TimeoutError:
            first = None
        if self.ledger.next_offset(tp) != start:
            return False  # settled meanwhile (the agent and the lag observer both call this)
        if first is not None and first > start:
            log.info("offsets: %s[%s] has no records at %s..%s (transaction markers or compaction)",
                     tp.topic, tp.partition, start, first - 1)
            self.metrics.offset_gaps.labels(tp.topic).inc()
            await self._faust_add_gap(tp, start, first - 1)
            self.ledger.skip_to(tp, first)
            return True
        log.warning("offsets: %s[%s] %s; re-reading from %s", tp.topic, tp.partition, what, start)
        self.metrics.offset_holes.labels(tp.topic).inc()
        try:
            # bounded: an agent or the lag observer stuck here would stop re-reading for good
            await _bounded(self.app.consumer.seek_wait({tp: start}), SEEK_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - the stall check will try again
            log.warning("offsets: seeking %s[%s] to %s failed (%r); will retry", tp.topic, tp.partition, start, error)
        return False

    async def _first_offset_in_log(self, tp, offset: int, timeout_ms: int = 5000) -> int | None:
        """The offset of the first record at or after `offset`, read with a throwaway consumer:
        None when there is none or the read failed; with no record before the end of the log,
        the end (the consumer's position passes transaction markers without records)."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, **self.settings.kafka_client_options())
        partition = TopicPartition(tp.topic, tp.partition)
        try:
            await consumer.start()
            consumer.assign([partition])
            consumer.seek(partition, offset)
            end = (await consumer.end_offsets([partition]))[partition]
            deadline = time.monotonic() + timeout_ms / 1000
            while time.monotonic() < deadline:  # short polls: a marker-only tail ends in one fetch
                batch = await consumer.getmany(partition, timeout_ms=200, max_records=1)
                records = batch.get(partition) or []
                if records:
                    return records[0].offset
                if await consumer.position(partition) >= end > offset:
                    return end
            return None
        except Exception as error:  # noqa: BLE001 - cannot tell: keep re-reading rather than skip
            log.warning("offsets: could not read %s[%s] at %s: %r", tp.topic, tp.partition, offset, error)
            return None
        finally:
            await consumer.stop()

    async def _settle_idle_partition(self, tp, highwater: int) -> None:
        """A partition whose applied offsets stop short of the end while nothing arrives: either
        the rest is a transactional producer's last commit marker (lag and the committed offset
        would stay one short forever) or records faust will not deliver again (a re-read whose
        messages its read-offset filter dropped) -- holes are otherwise retried only when a later
        message arrives."""
        start = self.ledger.next_offset(tp)
        if start is None or start >= highwater:
            return
        await self._resolve_hole(tp, start, f"stalled at {start} with records up to {highwater - 1} not delivered")

    async def _faust_add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        await self.app.consumer._kpi_add_gap(tp, offset_from, offset_to)

    async def _committed_or_earliest(self, tp) -> int:
        thread = self.app.consumer._thread
        aiokafka_consumer = thread._ensure_consumer()
        committed = await thread.call_thread(aiokafka_consumer.committed, TopicPartition(tp.topic, tp.partition))
        if committed is not None:
            return committed
        earliest = await self.app.consumer.earliest_offsets(TopicPartition(tp.topic, tp.partition))
        return next(iter(earliest.values()), 0) or 0

    async def _dead_letter(self, message, raw: bytes, rejected: Rejected) -> None:
        record = rejection_record(
            raw, rejected.reason, rejected.detail,
            topic=message.topic, partition=message.partition, offset=message.offset,
        )
        await self.deadletter_topic.send(key=message.key, value=orjson.dumps(record))
        self.metrics.deadletters.labels(rejected.reason).inc()
        log.info("dead letter %s from %s[%s]@%s: %s", rejected.reason, message.topic,
                 message.partition, message.offset, rejected.detail)

    def _entity_partition(self, family: Family, partition: int) -> EntityPartition:
        entity = self.entities.get((family, partition))
        if entity is None:
            entity = self.entities[(family, partition)] = EntityPartition(
                KpiEngine(self.kpi, self.clock.now_us()), generation=self._generation())
        return entity

    def _generation(self) -> int:
        return int(getattr(self.app, "consumer_generation_id", 0) or 0)

    def _make_rebuild(self, family: Family):
        async def rebuild() -> None:
            # Every assigned partition is rebuilt from the facts table, also one that already has
            # an engine: Faust may deliver a newly assigned partition's events before this callback
            # runs, and the engine created for them then lacks the partition's history. Those
            # events' facts are in the table or still pending, so the rebuilt engine has them too.
            assigned = self._assigned_partitions(FAMILY_TOPICS[family][0])
            previous = {p: self.entities.pop((fam, p)) for (fam, p) in list(self.entities) if fam is family}
            # a save still running holds the engines of before this rebalance: its files must not
            # appear after this rebuild has taken (and removed) the ones it uses
            self._report_background_save(self.saver.stop())
            if not assigned:
                self._discard_unread_snapshots(family)
                self.recovered = True
                return
            started = time.perf_counter()
            table = self.fact_tables[family]
            # partition -> [(table key, batch id)]: every key parsed once
            batches_by_partition: dict[int, list[tuple[Any, Any]]] = {}
            for key in table.data.keys():
                partition, batch = _fact_partition_and_batch(key, table.data)
                batches_by_partition.setdefault(partition, []).append((key, batch))
            restored = self._take_snapshots(family, assigned, batches_by_partition)
            engines, entities = {}, {}
            for p in assigned:
                entity = self._entity_partition(family, p)
                if p in previous:  # same generation: keep the partial sequence growing
                    entity.sequence = previous[p].sequence
                if p in restored:
                    snapshot = restored[p][0]
                    entity.engine, entity.covered = snapshot.engine, snapshot.covered
                    entity.engine.mark_all_dirty()
                    self.clock.observe(entity.engine.latest_occurred_us)
                engines[p], entities[p] = entity.engine, entity
            skip = {p: lookup for p, (_, lookup, _) in restored.items()}
            applied_keys: list[tuple[int, Any]] = []

            def stored():
                for p, keys in batches_by_partition.items():
                    if p not in engines:
                        continue
                    covered = skip.get(p)
                    for key, batch in keys:
                        if covered is not None and batch in covered:
                            continue
                        applied_keys.append((p, batch))
                        yield _fact_batch(key, table.data[key])

            def in_flight():  # applied but in no table yet: on their way to the changelog
                for (fam, p), flying in self.facts_in_flight.items():
                    if fam is family and p in engines:
                        covered = skip.get(p)
                        for batch, facts in flying.values():
                            if covered is None or batch not in covered:
                                yield {"p": p, "f": facts}
            pending = ({"p": p, "f": f} for (fam, p), f in self.pending_facts.items() if fam is family)
            facts = apply_fact_batches(itertools.chain(stored(), in_flight(), pending), engines, self.kpi, self.clock)
            for p, batch in applied_keys:
                entities[p].covered.add(batch)
            for p, (snapshot, _, _) in restored.items():
                self._pend_again(family, p, snapshot.unwritten)
            seconds = time.perf_counter() - started
            self.metrics.rebuild_seconds.labels(family.value).observe(seconds)
            sources = collections.Counter(source for _, _, source in restored.values())
            sources["facts"] = len(assigned) - len(restored)
            for source in ("kept", "snapshot", "facts"):
                self.metrics.partition_rebuilds.labels(family.value, source).inc(sources[source])
            log.info("rebuilt %s partitions %s in %.2fs: %d restored from snapshots, %d kept from before the "
                     "rebalance, then %d facts applied", family.value, sorted(assigned), seconds,
                     sources["snapshot"], sources["kept"], facts)
            self.recovered = True
            # State restored or re-applied: the snapshot files are gone (used or discarded), so the
            # next save comes soon and a kill does not redo this rebuild. A start from nothing has
            # nothing to lose to a kill yet and waits the regular interval: each background save
            # costs the worker a burst of copy-on-write faults (bench/README.md, twentieth session).
            soon = SNAPSHOT_AFTER_REBUILD_SECONDS if restored or facts else float("inf")
            self.next_snapshot_at = min(self.next_snapshot_at,
                                        time.monotonic() + min(self.settings.snapshot_interval_seconds, soon))
        return rebuild

    def _take_snapshots(self, family: Family, assigned: set[int],
                        batches_by_partition: dict[int, list]) -> dict[int, tuple[EngineSnapshot, Any, str]]:
        """The snapshots this rebuild may use -- saved at the last stop, or in the background
        (`_snapshot_if_due`) -- for the assigned partitions: those whose covered batches are all
        still in the facts table. The family's other snapshot files are removed."""
        restored = {}
        for p in sorted(assigned):
            # the engine held until this rebalance is newer than any saved one
            snapshot, source = self.parked.pop((family, p), None), "kept"
            if snapshot is None:
                snapshot, source = self.snapshots.take(family, p), "snapshot"
            if snapshot is None:
                continue
            in_table = {batch for _, batch in batches_by_partition.get(p, ())}
            flying_here = {batch for batch, _ in self.facts_in_flight.get((family, p), {}).values()}
            still_flying = []
            for batch, facts in snapshot.in_flight.items():
                # sent before the snapshot: in the table, the engine holds it as it holds any
                # covered batch; still on its way from this process, it is covered when it lands;
                # lost with an earlier process, its facts are written again like `unwritten`
                if batch in in_table:
                    snapshot.covered.add(batch)
                elif batch in flying_here:
                    still_flying.append(batch)
                else:
                    snapshot.unwritten.extend(facts)
            snapshot.in_flight = {}
            lookup = snapshot.covered.lookup()
            missing = missing_batches(snapshot.covered, in_table, lookup)
            if missing:
                log.warning("snapshot of %s partition %d ignored: %d of the %d fact batches it covers are "
                            "not in the facts table (local store discarded, or changelog rewritten); "
                            "rebuilding the partition from its facts", family.value, p, missing,
                            len(snapshot.covered))
                continue
            for instance, number in still_flying:  # held by the engine: not to be applied again
                lookup.numbers.setdefault(instance, set()).add(number)
            restored[p] = (snapshot, lookup, source)
        if any(source == "snapshot" for _, _, source in restored.values()):
            # Unpickled with the collector paused, a million objects sit in its youngest
            # generation: the next allocations would walk them in collections of every generation
            # (~1 s per million outlets, mid-restart). They live as long as the partition does.
            gc.freeze()
        self._discard_unread_snapshots(family)
        return restored

    def _discard_unread_snapshots(self, family: Family) -> None:
        for key in [key for key in self.parked if key[0] is family]:
            del self.parked[key]  # partitions that went to other workers
        removed = self.snapshots.discard(family)
        if removed:
            log.info("removed %d %s snapshots of partitions not assigned to this worker", removed, family.value)

    def _pend_again(self, family: Family, partition: int, facts: list[list]) -> None:
        """Facts a snapshot's engine holds that never reached the facts table: written again with
        the next flush (their events' offsets were not committed; re-read, they are duplicates)."""
        if not facts:
            return
        self.pending_facts.setdefault((family, partition), [])[:0] = facts
        self.pending_fact_count += len(facts)
        self.unwritten_facts += len(facts)

    async def _save_snapshots(self, app=None, **kwargs) -> None:
        """On stop (faust has stopped consuming): save each partition's engine for the next start.
        Blocking on purpose -- nothing else runs any more -- and best effort: a snapshot that is
        not saved costs the next start a rebuild from facts, nothing else."""
        self._report_background_save(self.saver.stop())
        if not self.settings.snapshot_on_stop or self.app.crash_reason is not None or not self.entities:
            return
        started, saved, size, unwritten = time.perf_counter(), 0, 0, 0
        for (family, partition), entity in list(self.entities.items()):
            snapshot = self._snapshot_of(family, partition, entity)
            try:
                size += self.snapshots.save(family, partition, snapshot)
                saved += 1
                unwritten += len(snapshot.unwritten) + sum(map(len, snapshot.in_flight.values()))
            except Exception:  # noqa: BLE001 - a failed save must not turn a clean stop into a crash
                log.exception("snapshot of %s partition %d not saved; the next start rebuilds it from facts",
                              family.value, partition)
        log.info("saved %d engine snapshots (%.1f MiB, %d facts not yet written) to %s in %.2fs", saved,
                 size / 2**20, unwritten, self.snapshots.directory, time.perf_counter() - started)

    def _snapshot_of(self, family: Family, partition: int, entity: EntityPartition) -> EngineSnapshot:
        """The partition's engine with what it holds beyond the acknowledged (covered) batches:
        its batches in flight, by id, and its facts not sent yet."""
        return EngineSnapshot(entity.engine, entity.covered, list(self.pending_facts.get((family, partition), ())),
                              dict(self.facts_in_flight.get((family, partition), {}).values()))

    def _snapshot_if_due(self) -> None:
        """Every KPI_SNAPSHOT_INTERVAL, save every partition's engine from a forked copy of the
        process (stream/worker/snapshots.py BackgroundSaver). Called only where no applied fact is
        merely pending -- each is in a batch, acknowledged (covered) or on its way (in flight,
        carried by id) -- so the copy needs nothing the worker does afterwards."""
        self._report_background_save(self.saver.poll())
        interval = self.settings.snapshot_interval_seconds
        if (interval <= 0 or self.saver.running or time.monotonic() < self.next_snapshot_at
                or not self.recovered or self.app.rebalancing or not self.entities):
            return
        self.next_snapshot_at = time.monotonic() + interval
        snapshots = {(family, partition): self._snapshot_of(family, partition, entity)
                     for (family, partition), entity in self.entities.items()}
        try:
            self.saver.start(snapshots)
        except OSError as error:  # fork refused (memory, process limit): the next interval retries
            log.warning("background snapshot not started: %s", error)
            self.metrics.background_snapshots.labels("failed").inc()

    def _report_background_save(self, report) -> None:
        if report is None:
            return
        if report.saved:
            self.metrics.background_snapshots.labels("saved").inc()
            self.metrics.background_snapshot_seconds.observe(report.seconds)
            log.info("saved %d engine snapshots in the background (%.1f MiB) in %.2fs", len(report.partitions),
                     report.size / 2**20, report.seconds)
        else:
            self.metrics.background_snapshots.labels("failed").inc()
            log.warning("background snapshot save of %d partitions did not finish (stopped after %.2fs, or "
                        "failed: see stderr above); the previous snapshot files stay", len(report.partitions),
                        report.seconds)

    def _crash_on_error(self, rebuild):
        """A rebuild that fails would publish wrong numbers: stop the worker, loudly, instead."""
        async def guarded() -> None:
            try:
                await rebuild()
            except Exception as error:
                log.exception("state rebuild failed; stopping the worker")
                await self.app.crash(error)
        guarded.__name__ = getattr(rebuild, "__name__", "rebuild")
        return guarded

    def _assigned_partitions(self, topic_name: str) -> set[int]:
        full = self.topics.input(topic_name)
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == full}

    def _agent_topics(self) -> set[str]:
        return {self.topics.input(name) for name in (*TYPE_TOPIC.values(), "sales.events")} | {self.topics.partials}

    async def _on_revoked(self, app, revoked, **kwargs) -> None:
        by_topic = {(tp.topic, tp.partition) for tp in revoked}
        for (family, partition), entity in self.entities.items():
            if (self.topics.input(FAMILY_TOPICS[family][0]), partition) in by_topic:
                self.parked[(family, partition)] = self._snapshot_of(family, partition, entity)
        for (family, partition) in list(self.pending_facts):
            if (self.topics.input(FAMILY_TOPICS[family][0]), partition) in by_topic:
                del self.pending_facts[(family, partition)]  # the next owner re-reads them
        dropped = self.pending_fact_count - sum(len(facts) for facts in self.pending_facts.values())
        self.pending_fact_count -= dropped
        self.unwritten_facts -= dropped
        self.ledger.forget(revoked)
        for tp in revoked:
            self.lag_seen.pop(tp, None)
            self.undelivered_rounds.pop(tp, None)
        for (family, partition) in list(self.entities):
            if (self.topics.input(FAMILY_TOPICS[family][0]), partition) in by_topic:
                del self.entities[(family, partition)]
        for key, partials in list(self.scopes.items()):
            if (self.topics.partials, partials.own_partition) in by_topic:
                del self.scopes[key]
                self.scope_pending_flush.pop(key, None)
                self.scope_published_flush.pop(key, None)
                self.scope_waiting_events.pop(key, None)
                self.scope_received_at.pop(key, None)
                self.evaluated_vectors.pop(key, None)  # with the publisher's memory of its values
                self.publisher.withdraw(key)
        for tp in revoked:
            try:
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass

    async def _flush_facts(self) -> None:
        """Write the facts applied since the last flush, a few hundred per changelog message
        instead of one message per event, then let their offsets be committed. The offsets are
        taken together with the facts, with no await in between: every offset below them is
        either in a batch on its way or was never a fact (duplicate, dead letter, routed).

        A batch enters the local table store only when Kafka has acknowledged it (then its
        changelog offset is recorded): the store is never ahead of its changelog, so an on-disk
        store is trusted after a kill too (stream/kafka/local_tables.py). Until then the batch is in
        `facts_in_flight`, which rebuilds and snapshots count as state."""
        if self.app.rebalancing:
            return
        if not self.pending_facts:
            self._snapshot_if_due()
            return
        batches, self.pending_facts = self.pending_facts, {}
        self.pending_fact_count = 0
        durable = {tp: self.ledger.next_offset(tp) for tp in list(self.ledger.cursors) if tp.topic in self.entity_topics}
        writes = []
        for (family, partition), facts in batches.items():
            flying = self.facts_in_flight.setdefault((family, partition), {})
            entries = []
            for start in range(0, len(facts), FACTS_PER_MESSAGE):
                self.fact_batches += 1
                chunk = facts[start:start + FACTS_PER_MESSAGE]
                key = orjson.dumps([partition, self.instance, self.fact_batches])
                flying[key] = ((self.instance, self.fact_batches), chunk)
                entries.append((key, orjson.dumps({"p": partition, "f": chunk}), len(chunk)))
            writes.append((family, partition, entries))
        self._snapshot_if_due()  # here every applied fact is in a batch: none is only pending
        for family, partition, entries in writes:
            await self._send_changelog(self.fact_tables[family], partition, entries,
                                       functools.partial(self._facts_written, family), store_when_written=True)
        for tp, offset in durable.items():
            if offset is not None:
                self.ledger.mark_durable(tp, offset)

    async def _send_changelog(self, table, partition: int, entries: list[tuple],
                              written: Callable[[int, list[Outgoing]], None] | None = None,
                              store_when_written: bool = False) -> None:
        """The changelog side of table writes: entries (key, value[, items]) as a few record
        batches (what `table[key] = value` does one message at a time). With
        `store_when_written` the entries enter the local store when the broker has them;
        otherwise they are there already (`_store_put_all`). Then the changelog offset is
        recorded, as faust does per write (an on-disk store recovers from there), and
        `written(partition, messages)` runs."""
        if not entries:
            return
        changelog = table.changelog_topic.get_topic_name()
        store = table.data

        def delivered(partition: int, last_offset: int, messages: list[Outgoing]) -> None:
            if store_when_written:
                _store_put_all(table, partition, [(m.key, m.value) for m in messages])
            if hasattr(store, "_db_for_partition"):  # on disk (rocksdb): the store recovers from its offset
                tp = TP(changelog, partition)
                first_offset = last_offset - len(messages) + 1
                stuck_at = _record_changelog_offset(store, tp, first_offset, last_offset)
                if stuck_at is not None and (tp, stuck_at) not in self.changelog_gaps:
                    # later batches find the offset behind them too: the first gap is the one to tell
                    self.changelog_gaps.add((tp, stuck_at))
                    log.warning("changelog %s[%d]: offsets %d..%d were written by another owner meanwhile and are "
                                "not in the local store; its recorded offset stays at %d (the next recovery "
                                "re-reads from there)", tp.topic, tp.partition, stuck_at + 1, first_offset - 1, stuck_at)
            if written is not None:
                written(partition, messages)

        await self.batches.send(changelog, (Outgoing(partition, key, value, items=rest[0] if rest else 1)
                                            for key, value, *rest in entries), delivered)

    def _facts_written(self, family: Family, partition: int, messages: list[Outgoing]) -> None:
        self.unwritten_facts -= sum(message.items for message in messages)
        flying = self.facts_in_flight.get((family, partition), {})
        entity = self.entities.get((family, partition))
        for message in messages:
            landed = flying.pop(message.key, None)
            if landed is not None and entity is not None:
                entity.covered.add(landed[0])

    def _on_lost_output(self, topic: str, error: BaseException) -> None:
        """A batch the broker never took: state or output behind the committed offsets may be
        missing. Stop; the restarted worker re-reads from the last commit and republishes."""
        asyncio.ensure_future(self.app.crash(RuntimeError(f"writing to {topic} failed: {error!r}")))

    async def _partials_loop(self) -> None:
        """`_flush_partials` at every flush instant of the wall-clock grid (stream/stages/cadence.py),
        which every worker shares: a scope's partials from all of them reach stage 2 together. A
        loop, not a Faust timer: a timer keeps its own phase."""
        interval = self.settings.publish_interval_seconds
        while not self.app.should_stop:
            flush, flush_at = next_flush(time.time(), interval)
            await asyncio.sleep(flush_at - time.time())
            try:
                await self._flush_partials(flush)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the scopes stay dirty; the next flush sends them
                log.exception("partials flush failed")

    async def _flush_partials(self, flush: int) -> None:
        """Send every scope whose vector moved since the last flush to the scope stage: one
        message per scope-stage partition per flush (split past PARTIALS_PER_MESSAGE), not one per
        scope -- each consumed message costs the scope stage a full trip through Faust."""
        if self.app.rebalancing:
            return
        partitions = await self.batches.partition_count(self.topics.partials)
        now_us = self.clock.now_us()
        by_destination: dict[int, list[list]] = {}
        events: WaitingCounts = {}  # applied since the last flush, in partitions that send
        for (family, partition), entity in list(self.entities.items()):
            engine = entity.engine
            engine.advance(now_us)
            applied, entity.unsent_events = entity.unsent_events, {}
            dirty = engine.take_dirty()
            if not dirty:
                # nothing of theirs to publish: done now
                self._observe_published(waiting.pairs(applied), time.time())
                continue
            waiting.merge(events, applied)
            entity.sequence += 1
            for fam, scope, vector in dirty:
                # the partition Faust's send by key picked before partials were batched: stored
                # scope-partials stay where they are
                destination = key_partition(orjson.dumps([fam.value, scope[0], scope[1]]), partitions)
                by_destination.setdefault(destination, []).append(
                    [fam.value, scope[0], scope[1], partition, entity.generation, entity.sequence,
                     encode_vector(vector)])
        messages = []
        for destination, entries in by_destination.items():
            for start in range(0, len(entries), PARTIALS_PER_MESSAGE):
                body = {"at": time.time_ns() // 1_000_000, "k": flush, "s": entries[start:start + PARTIALS_PER_MESSAGE]}
                if not messages:  # the flush's events ride with one message only: each counted once
                    body["e"] = waiting.encode(events)
                messages.append(Outgoing(destination, orjson.dumps(["partials", self.instance]), orjson.dumps(body)))
        await self.batches.send(self.topics.partials, messages)
        self.metrics.state_entities.labels("outlet").set(
            sum(len(e.engine.outlets) for (f, _), e in self.entities.items() if f is Family.OUTLET))
        self.metrics.state_entities.labels("lead").set(
            sum(len(e.engine.leads.leads) for (f, _), e in self.entities.items() if f is Family.LEAD))
        self.metrics.state_entities.labels("scope").set(len(self.scopes))

    # -- stage 2 -------------------------------------------------------------------------------

    async def _scope_agent(self, stream) -> None:
        async for event in stream.events():
            message = event.message
            if not await self._admit(message):
                continue
            body = orjson.loads(message.value)
            entries = body.get("s")
            if entries is None:  # one scope per message, as written before partials were batched
                family, scope_type, scope_id = orjson.loads(message.key)
                entries = [[family, scope_type, scope_id, body["p"], body["g"], body["n"], body["v"]]]
            writes: dict[bytes, bytes] = {}  # one write per scope per message, the last
            events = waiting.decode(body.get("e"))
            received_at = time.time()
            sent_ms = body.get("at")
            if sent_ms is not None:
                self.partials_delay.observe(max(0.0, received_at - sent_ms / 1000))
            flush = body.get("k")
            if flush is None:  # written before flushes were numbered: the period it was sent in
                flush = flush_period(sent_ms / 1000 if sent_ms is not None else received_at,
                                     self.settings.publish_interval_seconds)
            for family, scope_type, scope_id, source, generation, sequence, vector in entries:
                key = (family, scope_type, scope_id)
                key_bytes = orjson.dumps(key)
                entry = self.scopes.get(key)
                if entry is None:
                    # Not rebuilt yet (a partial can arrive before the recovery callback): start from
                    # what the table holds, or the write below would drop the other sources' partials.
                    data = self.partials_table.data
                    entry = self.scopes[key] = _scope_partials(
                        message.partition, [data.get(key_bytes), data.get(key)])
                version = (generation, sequence)
                if version < entry.versions.get(source, (-1, -1)):
                    continue  # a previous owner's late partial
                entry.keep(source, version, vector)
                writes[key_bytes] = orjson.dumps({
                    "part": message.partition,
                    "by": entry.encoded,
                    "ver": {str(p): v for p, v in entry.versions.items()},
                })
                self.dirty_scopes.add(key)
                self.scope_received_at.setdefault(key, received_at)
                if flush > self.scope_pending_flush.get(key, flush - 1):
                    self.scope_pending_flush[key] = flush
                if events:
                    self.scope_waiting_events.setdefault(key, []).extend(events)
                    events = []
            if events:  # every partial was a previous owner's: nothing of this flush to publish here
                self._observe_published(events, received_at)
            entries = list(writes.items())
            _store_put_all(self.partials_table, message.partition, entries)
            await self._send_changelog(self.partials_table, message.partition, entries)

    async def _rebuild_scopes(self) -> None:
        assigned = self._assigned_partitions_full(self.topics.partials)
        for key, entry in list(self.scopes.items()):
            if entry.own_partition not in assigned:
                del self.scopes[key]
        # One scope can be stored under two key forms (bytes as written, a tuple after changelog
        # recovery, see `_stored`): merge them, per source the newest version.
        stored_by_scope: dict[tuple, list] = {}
        for raw_key, value in self.partials_table.data.items():
            stored_by_scope.setdefault(tuple(_stored(raw_key)), []).append(value)
        for key, values in stored_by_scope.items():
            entry = _scope_partials(_stored(values[0])["part"], values)
            if entry.own_partition in assigned:
                self.scopes[key] = entry
                self.dirty_scopes.add(key)

    def _assigned_partitions_full(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    async def _publish_loop(self) -> None:
        """`_publish_round` every tick. A loop, not a Faust timer: a round longer than a tick is
        normal under load, and mode's timer logs a warning for every one."""
        tick = publish_tick(self.settings.publish_interval_seconds)
        while not self.app.should_stop:
            await asyncio.sleep(tick)
            self.tally.flush()
            try:
                await self._publish_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep publishing; the next round retries the scopes
                log.exception("publication round failed")

    async def _publish_round(self) -> None:
        """Runs every publish tick (a twentieth of the interval): publishes each changed scope due
        by stream/stages/cadence.py -- once per flush period (spec 5.1: at most once per interval per
        key), a tick or two after the flush's partials arrive."""
        if self.app.rebalancing:
            return
        now = time.time()
        interval = self.settings.publish_interval_seconds
        period = flush_period(now, interval)
        as_of = self.clock.now_us()
        if as_of != self.last_as_of_us and age_refresh_due(now, interval, self.age_refreshed_flush):
            # lead ages move with as_of itself: lead scopes not published this period go out now
            self.dirty_scopes.update(key for key in self.scopes if key[0] == Family.LEAD.value
                                     and self.scope_published_flush.get(key, period - 1) < period)
            self.last_as_of_us = as_of
            self.age_refreshed_flush = period
        pending, published, received = self.scope_pending_flush, self.scope_published_flush, self.scope_received_at
        settle = publish_tick(interval)
        due = [key for key in self.dirty_scopes
               if due_for_publication(pending.get(key, period), published.get(key), received.get(key), now,
                                      interval, settle)]
        if not due:
            return
        out = RoundOutput(round_stamp(as_of, time.time_ns() // 1000, f"/kpi-stream/{self.settings.app_id}"),
                          await self.batches.partition_count(self.topics.updates))
        # The scope types dashboards and alerts read (KPI_EXPORT_SCOPES: global, region, territory)
        # first, and the round sent in chunks: with a field force of thousands of reps a round is
        # ~20,000 updates, ~0.5 s of work, which the headline keys need not wait behind.
        exported = self.gauges.export_scopes
        due.sort(key=lambda key: key[1] not in exported)
        events: list[tuple[int, int]] = []  # published with this chunk (stream/stages/waiting.py)
        oldest_received = None
        for key in due:
            self.dirty_scopes.discard(key)
            published[key] = flush_published(pending.pop(key, period), published.get(key), now, interval)
            waiting_here = self.scope_waiting_events.pop(key, None)
            if waiting_here:
                events.extend(waiting_here)
            received_at = self.scope_received_at.pop(key, None)
            entry = self.scopes.get(key)
            if entry is None or not entry.by_source:
                continue
            family = Family(key[0])
            total = sum_vectors(entry.by_source.values())
            # the vector this scope's published values came from: only groups that moved are
            # evaluated and compared again (a scope's ~40 values cost ~40 us to evaluate)
            values = evaluate_family(self.kpi, self.layouts, family, (key[1], key[2]), total, as_of,
                                     self.evaluated_vectors.get(key))
            self.evaluated_vectors[key] = tuple(total)
            if not self.publisher.publish(key, values, out):
                continue
            if received_at is not None and (oldest_received is None or received_at < oldest_received):
                oldest_received = received_at
            if len(out.outgoing) >= PUBLISH_CHUNK:
                await self._send_publication(out, events, oldest_received)
                events, oldest_received = [], None
                await asyncio.sleep(0)  # the producer's sender runs, and the agents a turn each
        await self._send_publication(out, events, oldest_received)

    async def _send_publication(self, out: RoundOutput, events: list[tuple[int, int]],
                                oldest_received: float | None) -> None:
        """Send the updates and Redis bodies a round has gathered so far; `events` are published
        with them (also those whose scopes' values did not move)."""
        outgoing, redis_bodies = out.outgoing, out.redis
        out.outgoing, out.redis = [], {}
        if outgoing:
            await self.batches.send(self.topics.updates, outgoing)
            self.metrics.updates_published.inc(len(outgoing))
            self.metrics.last_publish.set(time.time())
            if oldest_received is not None:
                self.publication_delay.observe(max(0.0, time.time() - oldest_received))
        self._observe_published(events, time.time())
        if self.redis is not None and redis_bodies:
            # Handed to the Redis writer, not awaited: a slow Redis must not hold up kpi.updates.
            self.redis.offer(redis_bodies)

    def _observe_published(self, events: list[tuple[int, int]], now_s: float) -> None:
        for age, count in waiting.ages(events, now_s):
            self.tally.observe_many(self.metrics.publish_latency, age, count)

    # -- lag, redis, web -----------------------------------------------------------------------

    async def _observe_lag(self) -> None:
        state = self.readiness()
        self.metrics.ready.set(1 if state["recovered"] and not state["rebalancing"] else 0)
        if state["recovered"] and not state["rebalancing"] and not self.heap_frozen:
            self.heap_frozen = True
            started = time.perf_counter()
            frozen = freeze_long_lived()
            collect_young_less_often()
            log.info("froze %d long-lived objects out of the cyclic GC's walk in %.2fs; young collections every "
                     "%d allocations (see stream/core/gcpause.py)", frozen, time.perf_counter() - started,
                     gc.get_threshold()[0])
        consumer = self.app.consumer
        held_back = self._held_back()
        watched = {self.topics.input(name) for name in TYPE_TOPIC.values()} | {
            self.topics.input("sales.events"), self.topics.partials}
        for tp in self.app.assignor.assigned_actives():
            if tp.topic not in watched:  # changelogs are read only during recovery
                continue
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not fetched yet
                highwater = None
            if held_back:
                # Nothing applied because the agents wait for Kafka to take the facts: not a stall,
                # and a re-read would only drop what was fetched. The stall counts start again after.
                self.lag_seen.pop(tp, None)
                self.undelivered_rounds.pop(tp, None)
                if highwater is not None:
                    position = self.ledger.next_offset(tp) or 0
                    self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
                continue
            waiting = self._waiting_its_turn(tp)
            if not self.ledger.known(tp):
                await self._check_undelivered(tp, state, waiting)
            else:
                self.undelivered_rounds.pop(tp, None)
            position = self.ledger.next_offset(tp) or 0
            if highwater is not None:
                seen, rounds = self.lag_seen.get(tp, ((-1, -1), 0))
                rounds = rounds + 1 if seen == (position, highwater) else 0  # rounds with nothing applied
                self.lag_seen[tp] = ((position, highwater), rounds)
                needed = TURN_WAIT_ROUNDS if waiting else 2
                if rounds >= needed and position < highwater and not self.app.rebalancing:
                    try:
                        await _bounded(self._settle_idle_partition(tp, highwater), 2 * SEEK_TIMEOUT_SECONDS + 5)
                    except TimeoutError:
                        log.warning("offsets: settling %s[%s] did not finish; next lag round retries",
                                    tp.topic, tp.partition)
                    position = self.ledger.next_offset(tp) or 0
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    def _held_back(self) -> bool:
        """The agents wait, or waited within the last lag round, for Kafka to acknowledge facts
        (backpressure): partitions make no progress then, on purpose."""
        return (self.unwritten_facts >= FACT_BACKLOG_LIMIT
                or time.monotonic() - self.held_back_until < LAG_ROUND_SECONDS)

    def _waiting_its_turn(self, tp) -> bool:
        """Records of `tp` sit in the consumer's fetch buffer: most likely it is not stalled, only
        waiting for its turn while the worker catches up, and seeking it would drop those records
        and fetch them again. So the stall checks give it TURN_WAIT_ROUNDS before acting."""
        try:
            return fetch_buffered(self.app.consumer._thread._ensure_consumer(), tp)
        except Exception:  # noqa: BLE001 - no consumer yet (nothing buffered), or aiokafka moved it
            return False

    async def _check_undelivered(self, tp, state: dict, waiting_its_turn: bool) -> None:
        """A partition assigned for three lag rounds (15 s) without delivering a single message
        while its log holds records past the committed offset: faust lost its position (seen
        after "exception performing seek when flow not active"), and the stall check above never
        sees it -- there is no applied offset to compare, and aiokafka reports no highwater for a
        partition it does not fetch. Seek it to the committed offset; re-reading is harmless."""
        rounds = self.undelivered_rounds.get(tp, 0) + 1
        self.undelivered_rounds[tp] = rounds
        needed = TURN_WAIT_ROUNDS if waiting_its_turn else 3
        if rounds < needed or self.app.rebalancing or not state["recovered"]:
            return
        try:
            await _bounded(self._wake_undelivered(tp), 2 * SEEK_TIMEOUT_SECONDS + 5)
        except TimeoutError:
            log.warning("offsets: checking %s[%s] did not finish; next lag round retries", tp.topic, tp.partition)
        except Exception:  # noqa: BLE001 - the lag observer must keep running
            log.exception("offsets: checking %s[%s] failed; next lag round retries", tp.topic, tp.partition)

    async def _wake_undelivered(self, tp) -> None:
        generation = self._generation()
        committed = await self._committed_or_earliest(tp)
        thread = self.app.consumer._thread
        aiokafka_consumer = thread._ensure_consumer()
        ends = await thread.call_thread(aiokafka_consumer.end_offsets, [TopicPartition(tp.topic, tp.partition)])
        end = next(iter(ends.values()), None)
        if (self._generation() != generation or self.ledger.known(tp) or tp not in self.app.consumer.assignment()
                or end is None or committed >= end):
            return
        log.warning("offsets: %s[%s] delivered nothing since its assignment although the log holds offsets "
                    "%s..%s; seeking to %s", tp.topic, tp.partition, committed, end - 1, committed)
        self.metrics.offset_holes.labels(tp.topic).inc()
        self.undelivered_rounds[tp] = 0  # the next attempt, if needed, three rounds from now
        await _bounded(self.app.consumer.seek_wait({tp: committed}), SEEK_TIMEOUT_SECONDS)

    def _redis_service(self):
        worker = self

        class RedisService(faust.Service):
            async def on_start(self) -> None:
                import redis.asyncio as redis_asyncio

                password = worker.settings.redis_password.value or None
                client = redis_asyncio.from_url(worker.settings.redis_url, password=password,
                                                socket_timeout=2.0, socket_connect_timeout=2.0)
                worker.redis = RedisSink(client, worker.settings.topic_prefix, worker.metrics,
                                         snapshot=lambda: dict(worker.publisher.latest_bodies))
                await worker.redis.check()

            @faust.Service.timer(2.0)
            async def _check_redis(self) -> None:
                if worker.redis is not None:
                    await worker.redis.check()

            @faust.Service.task
            async def _write_redis(self) -> None:
                # While Redis is down, `_check_redis` retries (every 2 s); here only when it is up.
                while not self.should_stop:
                    await self.sleep(0.05)
                    sink = worker.redis
                    if sink is not None and sink.up and sink.backlog:
                        await sink.write()

        return RedisService

    async def _check_kafka(self) -> None:
        """Can the worker reach the cluster? (a metadata round trip through its producer's client)"""
        producer = getattr(self.app.producer, "_producer", None)  # faust's aiokafka producer, once started
        if producer is None:
            return
        try:
            reachable = bool(await asyncio.wait_for(producer.client.force_metadata_update(), timeout=5.0))
        except Exception:  # noqa: BLE001 - any failure means: not reachable now
            reachable = False
        if reachable != self.kafka_up:
            if reachable:
                log.info("kafka reachable again: consuming resumes")
            else:
                log.warning("kafka unreachable: the worker waits (nothing is consumed or committed)")
        self.kafka_up = reachable

    def readiness(self) -> dict[str, Any]:
        app = self.app
        return {
            "recovered": self.recovered,
            "rebalancing": bool(app.rebalancing),
            "kafka": self.kafka_up,
            "redis": bool(self.redis and self.redis.up),
            "entity_partitions": len(self.entities),
            "scopes": len(self.scopes),
        }

    def _add_pages(self, app: faust.App) -> None:
        worker = self

        @app.page("/metrics")
        async def metrics_page(view, request):
            # `?name[]=a&name[]=b`: only those families, as prometheus_client's own handler allows --
            # the full exposition holds a series per exported KPI and scope (~10 ms to render)
            names = request.query.getall("name[]", [])
            registry = worker.metrics.registry
            worker.tally.flush()
            exposition = generate_latest(registry.restricted_registry(names) if names else registry)
            # aiohttp takes the charset separately from the content type
            return view.bytes(exposition, content_type=_METRICS_CONTENT_TYPE)

        @app.page("/health")
        async def health_page(view, request):
            return view.json({"status": "ok"})

        @app.page("/ready")
        async def ready_page(view, request):
            state = worker.readiness()
            ready = state["recovered"] and not state["rebalancing"] and state["kafka"]
            worker.metrics.ready.set(1 if ready else 0)
            # Redis down does not make the worker unready: it keeps consuming and catches Redis
            # up later; the state is reported so operators can see it.
            return view.json({"ready": ready, **state}, status=200 if ready else 503)

        @app.page("/kpi")
        async def kpi_page(view, request):
            filters = {name: request.query.get(name) for name in ("kpi", "window", "scope", "scope_id", "horizon", "kind")}
            if worker.redis is None:
                return view.json({"error": "redis not connected"}, status=503)
            try:
                latest = await worker.redis.read_all()
            except Exception as error:  # noqa: BLE001
                return view.json({"error": f"redis unavailable: {error}"}, status=503)
            rows = [
                message for message in latest.values()
                if all(wanted is None or str(message.get(name)) == wanted for name, wanted in filters.items())
            ]
            rows.sort(key=lambda m: (m["kpi"], m["window"] or "", m["scope"], m["scope_id"]))
            return view.json({"count": len(rows), "values": rows})


async def _bounded(awaitable, seconds: float):
    """`await awaitable`, or TimeoutError after `seconds` -- without waiting for it to cancel
    (`asyncio.wait_for` does wait, and a call stuck in Faust's consumer thread may never finish
    cancelling: the lag observer then stopped re-reading a stalled partition for good)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("offsets: %r still running after %.0f s; abandoned", awaitable, seconds)
        raise TimeoutError(f"not done after {seconds} s")
    return task.result()


def apply_fact_batches(batches, engines: dict[int, KpiEngine], kpi, clock: Clock) -> int:
    """Rebuild: apply stored facts ({"p": partition, "f": [[entity, event_id, ref_us, raw]]}) to
    the engines of their partitions, each (entity, event_id, reference instant) once -- a fact
    re-read after a crash can be in two batches. Returns the facts handed to the engines.

    The engines' dedupers tell the second copy of a fact: it is an exact repeat, and they forget
    nothing until the rebuild is over (`Deduper.remembering_everything`). A set of identities
    here did the same at ~100-230 bytes per fact until the end of the rebuild (bench/README.md).
    The cyclic garbage collector is paused meanwhile (stream/core/gcpause.py; ~29 % of rebuild time
    in bench/scaling.py). Not frozen afterwards: freezing would also pin whatever else was
    alive, and a worker rebalances many times."""
    count = 0
    with cyclic_gc_paused(), contextlib.ExitStack() as holding:
        for engine in engines.values():
            holding.enter_context(engine.deduper.remembering_everything())
        for batch in batches:
            engine = engines.get(batch["p"])
            if engine is None:
                continue
            for _entity_key, _event_id, ref_us, raw in batch["f"]:
                try:
                    event = decode_event(raw.encode(), ref_us, kpi)
                except Rejected:  # settings changed since it was accepted; keep going, say so
                    log.warning("stored fact no longer valid under current settings: %s", raw[:200])
                    continue
                engine.apply(event)  # a second copy of a fact is a duplicate to it: no change
                clock.observe(event.occurred_us)
                count += 1
    return count


def _record_changelog_offset(store, tp, first_offset: int, last_offset: int) -> int | None:
    """Record that the local store holds changelog `tp` up to `last_offset`, after a batch at
    [first_offset, last_offset] entered it -- only if the batch follows the offset recorded so
    far. A recorded offset promises every record up to it is in the store: an on-disk store kept
    across a restart or a rebalance recovers from there. A gap before the batch holds records
    this store never took -- another owner's, written while a rebalance moved the partition and
    this batch was still on its way -- and recording past it would make the next recovery skip
    them (facts lost for good once their input offsets are committed). Then the offset stays:
    the next recovery re-reads from it, our own batch included (the same key and value again).
    Returns the offset left in place when there is such a gap, else None."""
    recorded = store.persisted_offset(tp)
    previous = -1 if recorded is None else recorded
    if first_offset == previous + 1:
        store.set_persisted_offset(tp, last_offset)
    elif first_offset > previous + 1:
        return previous
    # else: recovery read past this batch already; the recorded offset never moves back
    return None


def _store_put_all(table, partition: int, entries: list[tuple]) -> None:
    """`table[key] = value` in the local store only, in changelog partition `partition` (faust
    would take the partition from the current stream event, and refuses writes without one)."""
    store = table.data
    for key, value, *_ in entries:
        key = kept(key)  # a store keeps its keys (and in memory its values) for good: stream/core/jsonbytes.py
        if hasattr(store, "_db_for_partition"):  # rocksdb: one database per partition, also chosen by event
            encoded = store._encode_key(key)
            store._db_for_partition(partition).put(encoded, store._encode_value(value))
            store._key_index[encoded] = partition
        else:
            store[key] = kept(value)


def _fact_partition_and_batch(key, store) -> tuple[int, Any]:
    """A facts-table entry's partition and batch id (stream/worker/snapshots.py `batch_id`), from its key
    [partition, instance, number]; an entry written before facts were batched ([entity, event_id,
    ref_us] -> [partition, ref_us, raw], see `_fact_batch`) names its partition in its value."""
    parsed = _stored(key)
    if is_batch_key(parsed):
        return parsed[0], (parsed[1], parsed[2])
    return _stored(store[key])[0], batch_id(parsed)


def _fact_batch(key, value) -> dict:
    """A facts-table entry as {"p": partition, "f": [[entity, event_id, ref_us, raw], ...]}; also
    reads the one-fact-per-key entries written before facts were batched."""
    value = _stored(value)
    if isinstance(value, dict):
        return value
    entity_key, event_id, ref_us = _stored(key)
    partition, ref_us, raw = value
    return {"p": partition, "f": [[entity_key, event_id, ref_us, raw]]}


def _stored(value):
    """A table key or value as we wrote it (JSON bytes). Faust's recovery path hands back the
    JSON already parsed even with raw serializers, so accept both forms."""
    return value if isinstance(value, (list, tuple, dict)) else orjson.loads(value)


def _on_disk_store_options() -> dict:
    """RocksDB settings for our tables (`KPI_STORE=rocksdb://`; ignored by `memory://`). faust's
    defaults are per database -- one per table and partition -- and sized for read-heavy tables:
    a 2 GiB block cache and up to 3 x 64 MiB of write buffers each, ~70 GiB for 4 tables x 8
    partitions. Ours are read back only when a partition is rebuilt (facts are written once; scope
    partials are rewritten, but their live copy is in memory), so small buffers and caches lose
    nothing and bound the store's memory to ~16 MiB per database. A fresh dict per table:
    faust pops keys from the one it is given."""
    return {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 8 << 20}


_RAW_BYTES = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def _raw_schema() -> faust.Schema:
    """Table keys and values are bytes we encode ourselves, in the changelog and after recovery."""
    return faust.Schema(**_RAW_BYTES)


class BytesAsFetched(faust.Schema):
    """The agents' topics: each message handed over as the key and value bytes Kafka returned.
    faust's own decode gets the same bytes back through its codec registry and settings lookups,
    ~5 us a message (a fifth of its hand-over per record, bench/README.md, eighteenth session).
    Sends through these topics (the router's re-keying) encode as `_raw_schema` does."""

    def __init__(self) -> None:
        super().__init__(**_RAW_BYTES)

    def compile(self, app, *, on_key_decode_error=None, on_value_decode_error=None, default_propagate=False):
        # what app.create_event builds, without its settings lookup per message (~2 us)
        event_type = app.conf.Event

        async def decode(message, *, propagate: bool = default_propagate):
            return event_type(app, message.key, message.value, message.headers, message)

        return decode


def _scope_partials(partition: int, stored_values: list) -> ScopePartials:
    """A scope's partials from the scope-partials table's stored values for it (None: absent),
    keeping for each source partition the partial with the newest (generation, sequence)."""
    entry = ScopePartials(partition)
    for value in stored_values:
        if value is None:
            continue
        stored = _stored(value)
        versions = stored.get("ver", {})
        for source, vector in stored["by"].items():
            version = tuple(versions.get(source, (-1, -1)))
            if version >= entry.versions.get(int(source), (-1, -1)):
                entry.keep(int(source), version, vector)
    return entry


def _drain_producer_buffer_fully(buffer) -> None:
    """Make `ProducerBuffer.flush()` wait until the buffer is empty.

    Faust commits offsets (and finishes a revocation) after `producer.flush()`, but faust 0.15.3's
    buffer flush gives up as soon as no message left the buffer for 0.1 s -- with table
    (changelog) writes still queued when the event loop is busy. Offsets then got committed ahead
    of the facts they stood for, and a partition handed over in a rebalance lost those facts
    (seen in the two-worker end-to-end test under load). Here flush returns only when the buffer
    is empty, or raises if the producer stopped with messages left in it."""
    async def flush() -> None:
        while buffer.size:
            if buffer.state != "running":
                raise RuntimeError(f"producer stopped with {buffer.size} unsent messages in its buffer")
            buffer.message_sent.clear()
            try:
                await asyncio.wait_for(buffer.message_sent.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                log.warning("producer buffer: %d messages still waiting to be sent", buffer.size)

    buffer.flush = flush


class _LedgerReadOffsets(dict):
    """faust's per-partition "last offset read", answered by the ledger on the agents' topics.

    faust 0.15.3 delivers a record only if its offset is >= the last one it delivered for the
    partition, and sets that mark after each delivery. When the ledger sees a hole and seeks the
    partition back, records of the batch faust fetched before the seek are still delivered after
    it and move the mark forward again; every re-read record is then dropped as already read
    ("DROPPED MESSAGE ROFF" at debug level) and the partition stalls until records past the old
    end arrive -- for good when none do. That was the rebalance-test flake: one "re-reading from
    N" warning, then nothing. On the agents' topics the mark is now the last offset the ledger
    applied, which a seek back never has to undo; elsewhere faust's own mark is kept."""

    def __init__(self, ledger: OffsetLedger, topics: set[str], marks) -> None:
        super().__init__(marks)
        self._ledger = ledger
        self._topics = topics

    def __missing__(self, tp):
        return None  # what faust's defaultdict(lambda: None) answered: never read

    def __getitem__(self, tp):
        if tp.topic in self._topics:
            expected = self._ledger.next_offset(tp)
            if expected is not None:
                return expected - 1 if expected > 0 else None
        return super().__getitem__(tp)


def _adapt_new_consumer(app, adapt: Callable[[Any], None]) -> None:
    """Run `adapt` on faust's consumer as faust creates it -- not earlier: creating it ahead of
    faust's own start-up slowed consumption threefold -- so before its fetch loop starts (which
    binds the read-mark mapping's methods once) and before its thread creates the aiokafka one."""
    new_consumer = app._new_consumer

    def adapted_consumer():
        consumer = new_consumer()
        adapt(consumer)
        return consumer

    app._new_consumer = adapted_consumer


def _consumer_follows_the_ledger(app, ledger: OffsetLedger, topics: set[str]) -> None:
    """The one place faust's consumer is adapted to the offset ledger: its read marks and its
    commits (below)."""
    def follow_the_ledger(consumer) -> None:
        consumer._read_offset = _LedgerReadOffsets(ledger, topics, consumer._read_offset)
        _commit_only_applied_offsets(consumer, ledger, topics)

    _adapt_new_consumer(app, follow_the_ledger)


def fetch_like_the_worker(app, fetch_max_wait_ms: int, fetch_min_bytes: int) -> None:
    """The worker's changes to how faust's consumer fetches and hands records to the agents (the
    capped wait, the minimum fetch, turns, no racing tasks per record). The empty-agent ceiling in
    bench/throughput.py gets the same, so both fetch alike."""
    shape_fetches(app, fetch_max_wait_ms, fetch_min_bytes)
    take_partition_turns(app)
    _adapt_new_consumer(app, deliver_without_racing_tasks)


def fetch_buffered(aiokafka_consumer, tp) -> bool:
    """Whether aiokafka holds fetched records of `tp` not handed out yet (see take_partition_turns).
    Read from the event loop's thread without a lock: a dict lookup under the GIL, and a stale
    answer costs one lag round."""
    return TopicPartition(tp.topic, tp.partition) in aiokafka_consumer._fetcher._records


def send_served_partitions_to_the_back(aiokafka_consumer, served) -> None:
    """Move the partitions a getmany just served behind the others in aiokafka's fetch buffer."""
    buffered = aiokafka_consumer._fetcher._records  # one fetch result per partition, in arrival order
    for tp in served:
        result = buffered.pop(tp, None)
        if result is not None:  # records left: its next turn comes after every other partition's
            buffered[tp] = result


def take_partition_turns(app) -> None:
    """Hand out buffered records a partition at a time, round-robin, `broker_max_poll_records` per turn.

    aiokafka's fetcher keeps one fetch result per partition (up to faust's 1 MiB, ~4,500 events)
    and serves getmany from the first result in arrival order until it is used up; a partition
    is fetched again only then, and goes to the back. While the worker catches up, a partition
    therefore waited for every other partition's whole fetch: ~28 partitions x 4,500 events, and
    some went 10-20 s without a delivery (orders stuck near offset 4,500, scope-partials untouched
    15 s after assignment; bench/README.md). Smaller fetches bound the turn too, but starve the
    scope stage, whose messages are large (400 partials each). Installed on the consumer
    thread's fetch call; runs on that thread, between fetcher steps."""
    turns_broken: list[BaseException] = []  # logged once

    def take_turns(consumer) -> None:
        thread = consumer._thread
        fetch_records = thread._fetch_records

        async def fetch_records_in_turns(aiokafka_consumer, active_partitions, timeout=None, max_records=None):
            records = await fetch_records(aiokafka_consumer, active_partitions, timeout=timeout,
                                          max_records=max_records)
            try:
                send_served_partitions_to_the_back(aiokafka_consumer, records)
            except AttributeError as error:  # aiokafka's internals moved (pinned in pyproject.toml)
                if not turns_broken:
                    turns_broken.append(error)
                    log.error("consumer: cannot reorder aiokafka's fetch buffer (%r): partitions are "
                              "served in fetch order, without turns, until aiokafka is pinned back", error)
            return records

        thread._fetch_records = fetch_records_in_turns

    _adapt_new_consumer(app, take_turns)


def shape_fetches(app, fetch_max_wait_ms: int, fetch_min_bytes: int) -> None:
    """Let the broker hold a fetch for at most `fetch_max_wait_ms`, and answer it before then only
    once it has `fetch_min_bytes` of records for it.

    The wait: faust 0.15.3 creates its aiokafka consumer with fetch_max_wait_ms=1500, not a setting. aiokafka
    keeps one fetch in flight per broker, and each names only the partitions with no records
    waiting in its buffer -- after a fetch that returned the busy ones, often just idle partitions
    (the router topic nobody writes to, a quiet scope-partials partition). The broker holds such
    a fetch until one of them gets a record or the wait ends, and the busy partitions drained
    meanwhile cannot be fetched: at a 0.1 s publish interval the worker's loop sat ~40 % idle
    with its input 1.5 s behind while an outside consumer saw the same records within 10 ms
    (bench/README.md).

    The minimum: with faust's (and Kafka's) 1 byte, a fetch comes back as soon as any partition it
    names has a record, so at a steady rate the consumer thread fetched hundreds of times a second,
    a few records each, and built and parsed every request for some thirty partitions in Python:
    at 500 events/s it used as much CPU as the main thread, and took the GIL from it. With 16 KiB
    the broker gathers records for up to the wait instead; while catching up every fetch is full
    anyway (bench/README.md, fifteenth session).

    Installed as faust creates its consumer, on the thread that will create the aiokafka one."""
    def shape(consumer) -> None:
        thread = consumer._thread
        create_aiokafka_consumer = thread._create_worker_consumer

        def create_with_shaped_fetches(transport):
            aiokafka_consumer = create_aiokafka_consumer(transport)
            # both read by its fetcher when it starts
            aiokafka_consumer._fetch_max_wait_ms = fetch_max_wait_ms
            aiokafka_consumer._fetch_min_bytes = fetch_min_bytes
            return aiokafka_consumer

        thread._create_worker_consumer = create_with_shaped_fetches

    _adapt_new_consumer(app, shape)


def _commit_only_applied_offsets(consumer, ledger: OffsetLedger, topics: set[str]) -> None:
    """Commit offsets of the agents' topics only up to the ledger's next unapplied offset.

    Faust 0.15.3 decides what to commit from the offsets its streams acked, and also counts as
    done every offset it did not see between two it did (`_add_gap`, meant for compacted topics)
    -- with a committed offset of None or 0 it does not even check that the acked offsets start
    where the committed ones end. On the agents' topics the ledger knows which offsets were
    really applied (stream/kafka/offsets.py), so faust's own gap filling is switched off there and its
    commit is capped at the ledger; a gap the ledger accepted is handed to faust explicitly."""
    new_offset = consumer._new_offset
    add_gap = consumer._add_gap

    def capped_new_offset(tp):
        if tp.topic not in topics:
            return new_offset(tp)
        limit = ledger.commit_limit(tp)
        if limit is None:
            return None
        offset = new_offset(tp)
        if offset is None or offset <= limit:
            return offset
        # faust forgets the acked offsets it returns (they count as committed from now on) and
        # never commits past a gap after the committed offset: the ones past the cap go back,
        # or this partition's commits would stop here for good
        behind_cap = range(limit, offset)
        consumer._acked[tp].extend(behind_cap)
        consumer._acked[tp].sort()
        consumer._acked_index[tp].update(behind_cap)
        return limit

    async def gap_outside_agent_topics(tp, offset_from: int, offset_to: int) -> None:
        if tp.topic not in topics:
            await add_gap(tp, offset_from, offset_to)

    consumer._new_offset = capped_new_offset
    consumer._add_gap = gap_outside_agent_topics
    consumer._kpi_add_gap = add_gap


def _credentials(settings: ServiceSettings):
    protocol = settings.kafka_security_protocol.upper()
    if protocol in ("SASL_SSL", "SASL_PLAINTEXT"):
        import ssl

        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None) if protocol == "SASL_SSL" else None
        return faust.SASLCredentials(
            username=settings.kafka_username,
            password=settings.kafka_password.value,
            mechanism=settings.kafka_sasl_mechanism or "SCRAM-SHA-512",
            ssl_context=context,
        )
    if protocol == "SSL":
        import ssl

        return faust.SSLCredentials(ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None))
    return None

