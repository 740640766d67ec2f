"""Stage 2, the scope stage, partitioned by scope.

Keeps the latest partial vector per source partition of each scope (stream/stages/scope_board.py,
backed by the scope-partials table), sums them, evaluates the KPIs and, checking every twentieth
of the publish interval, publishes each changed scope at most once per interval to kpi.updates,
Redis and the gauges: the values that moved (stream/stages/publication.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from stream.core.engine import Family, Layouts, evaluate_family
from stream.kafka import faust_internals
from stream.kafka.batches import BatchProducer
from stream.kafka.holes import OffsetGuard
from stream.kafka.tables import ChangelogWriter
from stream.kafka.wire_partials import (decode_groups, decode_partials, decode_scope_entry, decode_targets,
                                        encode_groups, encode_scope_entry, scope_key_bytes, scope_key_of_stored,
                                        target_board_family, targets_family)
from stream.kafka.wire_vectors import decode_vector, encode_vector
from stream.stages import waiting
from stream.stages.cadence import age_refresh_due, flush_period, publish_tick
from stream.stages.publication import Publisher, RoundOutput
from stream.stages.scope_board import ScopeBoard, ScopeKey, ScopePartials
from stream.stages.scope_periods import ScopePeriods
from stream.stages.updates import round_stamp
from stream.worker.context import WorkerContext
from stream.worker.sinks import RedisSink

log = logging.getLogger(__name__)

# updates a publication round evaluates before it sends them and lets the event loop run
PUBLISH_CHUNK = 1_000


def decode_extra(family: str, encoded: list) -> tuple:
    """What rides with a partial's vector: a KPI family's period groups, or a scope's targets."""
    return decode_targets(encoded) if targets_family(family) else decode_groups(encoded, decode_vector)


def scope_partials_from_stored(partition: int, stored_values: list, family: str = "outlet") -> ScopePartials:
    """A scope's partials from the scope-partials table's stored values for it (None: absent),
    keeping for each source partition the partial with the newest (generation, sequence)."""
    partials = ScopePartials(partition)
    for value in stored_values:
        if value is None:
            continue
        _, sources = decode_scope_entry(value)
        for source, version, vector, extra in sources:
            if partials.is_newer(source, version):
                partials.keep(source, version, decode_vector(vector), vector, decode_extra(family, extra), extra)
    return partials


class ScopeStage:
    def __init__(self, ctx: WorkerContext, guard: OffsetGuard, batches: BatchProducer, writer: ChangelogWriter,
                 publisher: Publisher) -> None:
        self.ctx = ctx
        self.layouts = Layouts.build(ctx.kpi)
        self.guard = guard
        self.batches = batches
        self.writer = writer
        self.publisher = publisher
        self.board = ScopeBoard()
        self.periods = ScopePeriods(ctx.kpi, self.layouts, ctx.clock.now_us())
        self.table = None  # the scope-partials table, set by the app
        self.redis: RedisSink | None = None  # set once the Redis service has started
        self.last_as_of_us: int | None = None
        self.age_refreshed_flush: int | None = None
        self.partials_delay = ctx.metrics.stage_delay.labels("partials")
        self.publication_delay = ctx.metrics.stage_delay.labels("publication")

    async def consume(self, stream) -> None:
        async for event in stream.events():
            message = event.message
            if self.guard.admit_next(message) or await self.guard.admit(message):
                await self.receive(message)

    async def receive(self, message) -> None:
        """Keep a partials message's partials, newest version per source, and write the scopes
        it changed to the table (one write per scope per message, the last)."""
        partials_message = decode_partials(message.value)
        board = self.board
        writes: dict[bytes, bytes] = {}
        events = waiting.decode(partials_message.events)
        received_at = time.time()
        self.partials_delay.observe(max(0.0, received_at - partials_message.sent_ms / 1000))
        for entry in partials_message.entries:
            family, scope_type, scope_id, source, generation, sequence, vector = entry[:7]
            groups = entry[7] if len(entry) > 7 else []
            key = (family, scope_type, scope_id)
            key_bytes = scope_key_bytes(key)
            partials = self._placed(key, message.partition)
            version = (generation, sequence)
            if not partials.is_newer(source, version):
                continue  # a previous owner's late partial
            target_family = targets_family(family)
            if target_family is not None:
                # a scope's targets: published with its KPI family's scope, which is due now
                partials.keep(source, version, (), (), decode_targets(groups), groups)
                key = (target_family, scope_type, scope_id)
                self._placed(key, message.partition)
            else:
                received = decode_groups(groups, decode_vector)
                carried = self.periods.carried_over(partials.groups.get(source, ()), received)
                if carried:
                    received += carried
                    groups = groups + encode_groups(carried, encode_vector)
                partials.keep(source, version, decode_vector(vector), vector, received, groups)
            writes[key_bytes] = encode_scope_entry(message.partition, partials.encoded, partials.versions,
                                                   partials.encoded_groups)
            board.receive(key, received_at, partials_message.flush, events)
            events = []
        if events:  # every partial was a previous owner's: nothing of this flush to publish here
            self.observe_published(events, received_at)
        entries = list(writes.items())
        faust_internals.store_put_all(self.table, message.partition, entries)
        await self.writer.send(self.table, message.partition, entries)

    def _placed(self, key: ScopeKey, partition: int) -> ScopePartials:
        """The board's partials of `key`, placed first if absent. Not rebuilt yet (a partial can
        arrive before the recovery callback): they start from what the table holds, or the next
        write would drop the other sources' partials."""
        partials = self.board.get(key)
        if partials is None:
            data = self.table.data
            partials = scope_partials_from_stored(partition, [data.get(scope_key_bytes(key)), data.get(key)], key[0])
            self.board.place(key, partials)
        return partials

    async def rebuild(self) -> None:
        """After recovery: the scopes of the assigned partitions, from the table, all published again."""
        assigned = faust_internals.assigned_partitions(self.ctx.app, self.ctx.topics.partials)
        for key in self.board.keys_in_partitions(assigned, inside=False):
            self.board.withdraw(key)
        # One scope can be stored under two key forms (bytes as written, a tuple after changelog
        # recovery, see stream/kafka/tables.py `stored`): merged, per source the newest version.
        stored_by_scope: dict[tuple, list] = {}
        for raw_key, value in self.table.data.items():
            stored_by_scope.setdefault(scope_key_of_stored(raw_key), []).append(value)
        for key, values in stored_by_scope.items():
            own_partition = decode_scope_entry(values[0])[0]
            partials = scope_partials_from_stored(own_partition, values, key[0])
            if partials.own_partition in assigned:
                self.board.restore(key, partials)
        for key in list(self.board.scopes):
            target_family = targets_family(key[0])
            if target_family is not None:  # targets publish with their family's scope, events or not
                base = (target_family, key[1], key[2])
                self._placed(base, self.board.scopes[key].own_partition)
                self.board.mark_dirty((base,))

    def revoke(self, partitions: set[int]) -> None:
        for key in self.board.keys_in_partitions(partitions):
            self.board.withdraw(key)
            self.publisher.withdraw(key)
            self.periods.withdraw(key)

    # -- publication ----------------------------------------------------------------------------

    async def publish_loop(self) -> None:
        """`publish_round` every tick. A loop, not a Faust timer: a round longer than a tick is
        normal under load, and mode's timer logs a warning for every one."""
        tick = publish_tick(self.ctx.settings.publish_interval_seconds)
        while not self.ctx.app.should_stop:
            await asyncio.sleep(tick)
            self.ctx.tally.flush()
            try:
                await self.publish_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep publishing; the next round retries the scopes
                log.exception("publication round failed")

    async def publish_round(self) -> None:
        """Publishes each changed scope due by stream/stages/cadence.py -- once per flush period
        (spec 5.1: at most once per interval per key), a tick or two after the flush's partials
        arrive."""
        if self.ctx.app.rebalancing:
            return
        board = self.board
        now = time.time()
        interval = self.ctx.settings.publish_interval_seconds
        period = flush_period(now, interval)
        as_of = self.ctx.clock.now_us()
        if as_of != self.last_as_of_us and age_refresh_due(now, interval, self.age_refreshed_flush):
            # lead ages move with as_of itself: lead scopes not published this period go out now
            board.mark_unpublished_dirty(Family.LEAD.value, period)
            self.last_as_of_us = as_of
            self.age_refreshed_flush = period
        if self.periods.follow(as_of):
            # a period boundary passed: aliases name new periods, periods left the published set
            board.mark_dirty(self.periods.scopes)
            self.publisher.forget_windows(self.periods.is_published_window)
        due = board.due(now, period, interval, publish_tick(interval))
        if not due:
            return
        out = RoundOutput(round_stamp(as_of, time.time_ns() // 1000, f"/kpi-stream/{self.ctx.settings.app_id}"),
                          await self.batches.partition_count(self.ctx.topics.updates))
        # The scope types dashboards and alerts read (KPI_EXPORT_SCOPES) first, and the round sent
        # in chunks: with a field force of thousands of reps a round is ~20,000 updates, ~0.5 s of
        # work, which the headline keys need not wait behind.
        exported = self.publisher.gauges.export_scopes
        due.sort(key=lambda key: key[1] not in exported)
        events: list[tuple[int, int]] = []  # published with this chunk (stream/stages/waiting.py)
        oldest_received = None
        for key in due:
            taken = board.take(key, period, now, interval)
            events.extend(taken.waiting_events)
            if taken.partials is None or targets_family(key[0]) is not None:
                continue  # targets are published with their KPI family's scope
            targets = board.get((target_board_family(key[0]), key[1], key[2]))
            if taken.partials.by_source:
                total = taken.partials.total()
                # only groups that moved since the last evaluation are evaluated and compared again
                # (a scope's ~40 values cost ~40 us to evaluate)
                values = evaluate_family(self.ctx.kpi, self.layouts, Family(key[0]), (key[1], key[2]), total, as_of,
                                         taken.evaluated)
                board.evaluated(key, total)
                values.extend(self.periods.values(key, taken.partials, total))
            elif targets is not None:
                values = []  # a scope with targets and no events yet: its targets alone (actual 0)
            else:
                continue
            if targets is not None:
                values.extend(self.periods.target_values(key, taken.partials, targets))
            if not self.publisher.publish(key, values, out):
                continue
            received_at = taken.received_at
            if received_at is not None and (oldest_received is None or received_at < oldest_received):
                oldest_received = received_at
            if len(out.outgoing) >= PUBLISH_CHUNK:
                await self._send(out, events, oldest_received)
                events, oldest_received = [], None
                await asyncio.sleep(0)  # the producer's sender runs, and the agents a turn each
        await self._send(out, events, oldest_received)

    async def _send(self, out: RoundOutput, events: list[tuple[int, int]], oldest_received: float | None) -> None:
        """Send the updates and Redis bodies a round has gathered so far; `events` are published
        with them (also those whose scopes' values did not move)."""
        outgoing, redis_bodies = out.outgoing, out.redis
        out.outgoing, out.redis = [], {}
        if outgoing:
            await self.batches.send(self.ctx.topics.updates, outgoing)
            self.ctx.metrics.updates_published.inc(len(outgoing))
            self.ctx.metrics.last_publish.set(time.time())
            if oldest_received is not None:
                self.publication_delay.observe(max(0.0, time.time() - oldest_received))
        self.observe_published(events, time.time())
        if self.redis is not None and redis_bodies:
            # Handed to the Redis writer, not awaited: a slow Redis must not hold up kpi.updates.
            self.redis.offer(redis_bodies)

    def observe_published(self, events: list[tuple[int, int]], now_s: float) -> None:
        for age, count in waiting.ages(events, now_s):
            self.ctx.tally.observe_many(self.ctx.metrics.publish_latency, age, count)
