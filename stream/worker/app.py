"""The worker: one Faust app wiring thin agents, timers and pages around the stages.

    input topics -> stage 1, the entity stage (stream/worker/entity_stage.py): decode, dedupe,
                    engine per partition; facts to changelog-backed tables (stream/worker/facts.py)
                 -> scope partials topic
                 -> stage 2, the scope stage (stream/worker/scope_stage.py): sum per scope,
                    evaluate, publish to kpi.updates, Redis and the gauges

Recovery after a restart or rebalance is stream/worker/recovery.py; offsets are admitted and
repaired by stream/kafka/holes.py and committed as the ledger says (stream/kafka/offsets.py,
installed on faust's consumer by stream/kafka/faust_internals.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import faust

from stream.core.clock import Clock, clock_for
from stream.core.config import ServiceSettings
from stream.core.engine import Family
from stream.core.gcpause import collect_young_less_often, freeze_long_lived
from stream.core.routing import MIXED_TOPIC, TYPE_TOPIC
from stream.kafka import faust_internals
from stream.kafka.batches import BatchProducer
from stream.kafka.faust_internals import BytesAsFetched
from stream.kafka.holes import OffsetGuard
from stream.kafka.offsets import OffsetLedger
from stream.kafka.tables import ChangelogWriter, on_disk_store_options, raw_schema
from stream.kafka.topics import TopicNames
from stream.stages.publication import Publisher
from stream.worker.api import access_middleware, quiet_client_errors
from stream.worker.context import WorkerContext
from stream.worker.dashboard import add_dashboard
from stream.worker.entity_stage import FAMILY_TOPICS, EntityStage
from stream.worker.facts import FACT_FLUSH_SECONDS, FactLog
from stream.worker.lag import LAG_ROUND_SECONDS, LagObserver
from stream.worker.metrics import MetricTally, ProcessorMetrics, RepTerritoryOutlets, build_processor_metrics
from stream.worker.pages import add_pages
from stream.worker.recovery import Recovery
from stream.worker.scope_stage import ScopeStage
from stream.worker.sinks import KpiGauges, RedisSink

log = logging.getLogger(__name__)

# Room for a publication round's updates or a fact batch in a few record batches
PRODUCER_BATCH_BYTES = 256 * 1024
KAFKA_CHECK_SECONDS = 2.0


class KpiWorker:
    """Builds the Faust app for one ServiceSettings and wires the stages into it."""

    def __init__(self, settings: ServiceSettings, metrics: ProcessorMetrics | None = None) -> None:
        faust_internals.check_versions()
        self.settings = settings
        self.kpi = settings.kpi
        self.metrics = metrics or build_processor_metrics()
        self.clock: Clock = clock_for(settings.kpi.clock)
        self.topics = TopicNames(settings.topic_prefix, settings.app_id)
        self.tally = MetricTally()  # per-event counts, added to their series before each scrape
        self.gauges = KpiGauges(self.metrics.registry, settings.export_scopes)
        self.ledger = OffsetLedger()
        self.kafka_up = True
        self.heap_frozen = False  # once, when first recovered: see freeze_long_lived
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        s, t = self.settings, self.topics
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{host}" for host in s.kafka_bootstrap.split(",")],
            broker_credentials=broker_credentials(s),
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
            # bearer tokens (KPI_API_TOKENS) for every page but the open ones: stream/worker/api.py
            web_application_options={"middlewares": [access_middleware(s.api_tokens, s.api_open_pages)]},
            broker_max_poll_records=500,
            broker_session_timeout=s.session_timeout_seconds,
            consumer_group_instance_id=s.group_instance_id or None,
            broker_heartbeat_interval=max(0.5, s.session_timeout_seconds / 10),
            producer_acks=-1,
            table_cleanup_interval=3600.0,
            # No standby replicas: state is rebuilt from the changelog on every assignment anyway,
            # and faust 0.15.3's standby recovery can crash a worker in a second rebalance
            # (seeking a standby partition: "Offset must be a positive integer").
            table_standby_replicas=0,
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
        )
        self.batches = BatchProducer(lambda: faust_internals.ensure_producer(app), self._on_lost_output)
        writer = ChangelogWriter(self.batches)
        faust_internals.drain_producer_buffer_fully(app.producer.buffer)
        faust_internals.consumer_follows_the_ledger(app, self.ledger, self.agent_topics())
        faust_internals.fetch_like_the_worker(app, s.fetch_max_wait_ms, s.fetch_min_bytes)

        self.entity_topics = {t.input(name) for names in FAMILY_TOPICS.values() for name in names}
        guard = OffsetGuard(app, self.ledger, s, self.metrics, persisted_later_topics=self.entity_topics,
                            deadletter_sources=self.entity_topics | {t.input("sales.events")},
                            deadletter_topic=t.deadletter)
        # each input commit carries where its partition's dead letters are (stream/kafka/deadletters.py)
        faust_internals.commit_with_metadata(app, guard.commit_metadata)
        self.guard = guard
        ctx = WorkerContext(app, s, self.metrics, self.tally, self.clock, t)
        self.entity_stage = EntityStage(ctx, guard, self.batches)
        if "rep" in s.export_scopes:  # with the rep gauges, which reps serve each territory
            self.metrics.registry.register(RepTerritoryOutlets(self.entity_stage.territory_rep_outlets))
        self.scope_stage = ScopeStage(ctx, guard, self.batches, writer, Publisher(self.gauges))
        self.fact_tables = {
            family: app.Table(f"{family.value}-facts", default=None, partitions=s.partitions, schema=raw_schema(),
                              options=on_disk_store_options())
            for family in Family
        }
        self.scope_stage.table = app.Table("scope-partials", default=None, partitions=s.partitions,
                                           schema=raw_schema(), options=on_disk_store_options())
        entities = self.entity_stage.entities

        def covered_of(key):
            entity = entities.get(key)
            return None if entity is None else entity.covered

        self.facts = FactLog(self.ledger, self.entity_topics, writer, self.fact_tables, covered_of,
                             self.metrics.backpressure)
        self.metrics.facts_unacknowledged.set_function(lambda: self.facts.unwritten)
        self.entity_stage.facts = self.facts
        self.recovery = Recovery(ctx, self.entity_stage, self.facts, self.fact_tables)
        self.lag = LagObserver(app, guard, self.facts, self.metrics, self.agent_topics(),
                               recovered=lambda: self.recovery.recovered, batches=self.batches)

        self.partials_topic = app.topic(t.partials, partitions=s.partitions, internal=True, schema=BytesAsFetched())
        for family, names in FAMILY_TOPICS.items():
            topic = app.topic(*[t.input(name) for name in names], schema=BytesAsFetched())
            app.agent(topic, name=f"{family.value}-stage")(self._entity_agent(family))
            self.fact_tables[family].on_recover(self._crash_on_error(self._rebuild(family)))
        router_topic = app.topic(t.input(MIXED_TOPIC), schema=BytesAsFetched())
        app.agent(router_topic, name="router")(self._entity_agent(None))
        app.agent(self.partials_topic, name="scope-stage")(self.scope_stage.consume)
        self.scope_stage.table.on_recover(self._crash_on_error(self.scope_stage.rebuild))
        app.on_partitions_revoked.connect(self.on_partitions_revoked)
        app.on_partitions_assigned.connect(self.on_partitions_assigned)
        app.on_before_shutdown.connect(self.recovery.save_snapshots)
        app.on_before_shutdown.connect(self._stop_guard)
        app.timer(FACT_FLUSH_SECONDS, name="flush-facts")(self.flush_facts)
        app.task(self._partials_loop)
        app.task(self.scope_stage.publish_loop)
        app.timer(LAG_ROUND_SECONDS, name="observe-lag")(self._lag_round)
        app.timer(KAFKA_CHECK_SECONDS, name="check-kafka")(self._check_kafka)
        app.service(self._redis_service())
        quiet_client_errors()
        add_pages(app, self)
        self.dashboard = add_dashboard(app, self)
        return app

    async def _stop_guard(self, app=None, **kwargs) -> None:
        await self.guard.stop()

    def agent_topics(self) -> set[str]:
        return {self.topics.input(name) for name in (*TYPE_TOPIC.values(), MIXED_TOPIC)} | {self.topics.partials}

    def _entity_agent(self, family: Family | None):
        async def entity_agent(stream):
            await self.entity_stage.consume(stream, family)
        entity_agent.__name__ = f"{family.value}_stage" if family is not None else "route_agent"
        return entity_agent

    def _rebuild(self, family: Family):
        async def rebuild() -> None:
            await self.recovery.rebuild(family)
        rebuild.__name__ = f"rebuild_{family.value}"
        return rebuild

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

    async def flush_facts(self) -> None:
        if self.app.rebalancing:
            return
        await self.facts.flush(self.recovery.snapshot_if_due)

    async def _partials_loop(self) -> None:
        await self.entity_stage.partials_loop(self.scope_stage.observe_published, lambda: len(self.scope_stage.board))

    async def on_partitions_revoked(self, app, revoked, **kwargs) -> None:
        by_topic = {(tp.topic, tp.partition) for tp in revoked}

        def entity_revoked(key: tuple[Family, int]) -> bool:
            family, partition = key
            return (self.topics.input(FAMILY_TOPICS[family][0]), partition) in by_topic

        entities = self.entity_stage.entities
        self.recovery.park({key for key in entities if entity_revoked(key)})
        self.facts.drop_pending(entity_revoked)
        self.guard.forget(revoked)
        self.lag.revoke(revoked)
        for key in [key for key in entities if entity_revoked(key)]:
            del entities[key]
        self.scope_stage.revoke({p for topic, p in by_topic if topic == self.topics.partials})

    async def on_partitions_assigned(self, app, assigned, **kwargs) -> None:
        # lag and stall series of exactly these partitions from now on, and a quick check that
        # each with records to read delivers (stream/worker/lag.py)
        self.lag.assign(assigned)

    def _on_lost_output(self, topic: str, error: BaseException) -> None:
        """A batch the broker never took: state or output behind the committed offsets may be
        missing. Stop; the restarted worker re-reads from the last commit and republishes."""
        asyncio.ensure_future(self.app.crash(RuntimeError(f"writing to {topic} failed: {error!r}")))

    async def _lag_round(self) -> None:
        state = self.readiness()
        ready = state["recovered"] and not state["rebalancing"]
        self.metrics.ready.set(1 if ready else 0)
        if ready and not self.heap_frozen:
            self.heap_frozen = True
            started = time.perf_counter()
            frozen = freeze_long_lived()
            collect_young_less_often()
            log.info("froze %d long-lived objects out of the cyclic GC's walk in %.2fs; young collections every "
                     "%d allocations (see stream/core/gcpause.py)", frozen, time.perf_counter() - started,
                     gc.get_threshold()[0])
        await self.lag.observe(state["recovered"])

    async def _check_kafka(self) -> None:
        """Can the worker reach the cluster? (a metadata round trip through its producer's client)"""
        producer = faust_internals.started_producer(self.app)
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

    def _redis_service(self):
        worker = self

        class RedisService(faust.Service):
            async def on_start(self) -> None:
                import redis.asyncio as redis_asyncio

                password = worker.settings.redis_password.value or None
                client = redis_asyncio.from_url(worker.settings.redis_url, password=password,
                                                socket_timeout=2.0, socket_connect_timeout=2.0)
                publisher = worker.scope_stage.publisher
                sink = RedisSink(client, worker.settings.topic_prefix, worker.metrics,
                                 snapshot=lambda: dict(publisher.latest_bodies))
                worker.scope_stage.redis = sink
                await sink.check()

            @faust.Service.timer(2.0)
            async def _check_redis(self) -> None:
                if worker.scope_stage.redis is not None:
                    await worker.scope_stage.redis.check()

            @faust.Service.task
            async def _write_redis(self) -> None:
                # While Redis is down, `_check_redis` retries (every 2 s); here only when it is up.
                while not self.should_stop:
                    await self.sleep(0.05)
                    sink = worker.scope_stage.redis
                    if sink is not None and sink.up and sink.backlog:
                        await sink.write()

        return RedisService

    def readiness(self) -> dict[str, Any]:
        redis = self.scope_stage.redis
        return {
            "recovered": self.recovery.recovered,
            "rebalancing": bool(self.app.rebalancing),
            "kafka": self.kafka_up,
            "redis": bool(redis and redis.up),
            "entity_partitions": len(self.entity_stage.entities),
            "scopes": len(self.scope_stage.board),
            # the agents' partitions this worker holds, "topic[partition]": those with lag series
            "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in self.lag.held),
        }


def broker_credentials(settings: ServiceSettings):
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
