"""Stage 1's state after a restart or a rebalance: engines rebuilt from snapshots and facts.

After recovery each assigned partition's engine is restored -- from the engine this worker held
before the rebalance (parked), else from a snapshot file -- and the facts it does not cover are
re-applied (facts commute: the result does not depend on their order); its scopes are all sent
again (partials are absolute, so resending is harmless). Snapshots are saved on stop and, every
KPI_SNAPSHOT_INTERVAL, from a forked copy of the process (stream/worker/snapshots.py).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import logging
import time
from pathlib import Path
from typing import Any, Iterable

from stream.core.clock import Clock
from stream.core.config import KpiSettings
from stream.core.decode import Rejected, decode_event
from stream.core.engine import Family, KpiEngine
from stream.core.gcpause import cyclic_gc_paused
from stream.kafka import faust_internals
from stream.kafka.wire_facts import Fact, decode_fact_batch, fact_batch_partition_and_id
from stream.worker.context import WorkerContext
from stream.worker.entity_stage import FAMILY_TOPICS, EntityPartition, EntityStage
from stream.worker.facts import FactLog
from stream.worker.snapshots import BackgroundSaver, EngineSnapshot, SnapshotShelf, engine_fingerprint, missing_batches

log = logging.getLogger(__name__)

# After a rebuild that restored or re-applied state (the snapshot files it found are used up),
# the next background snapshot comes this soon, or at KPI_SNAPSHOT_INTERVAL if that is sooner.
SNAPSHOT_AFTER_REBUILD_SECONDS = 60.0


def apply_fact_batches(batches: Iterable[tuple[int, list[Fact]]], engines: dict[int, KpiEngine], kpi: KpiSettings,
                       clock: Clock) -> int:
    """Apply stored facts, (partition, facts) batches, to the engines of their partitions, each
    (entity, event_id, reference instant) once -- a fact re-read after a crash can be in two
    batches. Returns the facts handed to the engines.

    The engines' dedupers tell the second copy of a fact: it is an exact repeat, and they forget
    nothing until the rebuild is over (`Deduper.remembering_everything`). The cyclic garbage
    collector is paused meanwhile (stream/core/gcpause.py), and not frozen afterwards: freezing
    would also pin whatever else is alive, and a worker rebalances many times."""
    count = 0
    with cyclic_gc_paused(), contextlib.ExitStack() as holding:
        for engine in engines.values():
            holding.enter_context(engine.deduper.remembering_everything())
        for partition, facts in batches:
            engine = engines.get(partition)
            if engine is None:
                continue
            for _entity_key, _event_id, ref_us, raw in facts:
                try:
                    event = decode_event(raw.encode(), ref_us, kpi)
                except Rejected:  # settings changed since it was accepted; keep going, say so
                    log.warning("stored fact no longer valid under current settings: %s", raw[:200])
                    continue
                engine.apply(event)  # a second copy of a fact is a duplicate to it: no change
                clock.observe(event.occurred_us)
                count += 1
    return count


class Recovery:
    def __init__(self, ctx: WorkerContext, stage: EntityStage, facts: FactLog, fact_tables: dict) -> None:
        self.ctx = ctx
        self.stage = stage
        self.facts = facts
        self.fact_tables = fact_tables
        settings = ctx.settings
        owner = f"app {settings.app_id}, topic prefix {settings.topic_prefix!r}, {settings.partitions} partitions"
        self.snapshots = SnapshotShelf(Path(ctx.app.conf.appdir) / "engine-snapshots", engine_fingerprint(self.ctx.kpi, owner))
        self.saver = BackgroundSaver(self.snapshots)
        # (family, partition) -> the engine this worker held until a rebalance revoked it, as a
        # snapshot: the next rebuild restores it if the partition comes back (eager rebalancing
        # revokes every partition, also those that stay), and drops the others
        self.parked: dict[tuple[Family, int], EngineSnapshot] = {}
        self.recovered = False
        self.next_snapshot_at = float("inf")  # monotonic; set once recovered (see snapshot_if_due)

    def assigned_partitions(self, family: Family) -> set[int]:
        return faust_internals.assigned_partitions(self.ctx.app, self.ctx.topics.input(FAMILY_TOPICS[family][0]))

    async def rebuild(self, family: Family) -> None:
        # Every assigned partition is rebuilt from the facts table, also one that already has an
        # engine: Faust may deliver a newly assigned partition's events before this callback runs,
        # and the engine created for them then lacks the partition's history. Those events' facts
        # are in the table or still pending, so the rebuilt engine has them too.
        entities = self.stage.entities
        assigned = self.assigned_partitions(family)
        previous = {p: entities.pop((fam, p)) for (fam, p) in list(entities) if fam is family}
        # a save still running holds the engines of before this rebalance: its files must not
        # appear after this rebuild has taken (and removed) the ones it uses
        self.report_background_save(self.saver.stop())
        if not assigned:
            self._discard_unread_snapshots(family)
            self.recovered = True
            return
        started = time.perf_counter()
        table = self.fact_tables[family]
        # partition -> [(table key, batch id)]: every key parsed once
        batches_by_partition: dict[int, list[tuple[Any, Any]]] = {}
        for key in table.data.keys():
            partition, batch = fact_batch_partition_and_id(key)
            batches_by_partition.setdefault(partition, []).append((key, batch))
        restored = self._take_snapshots(family, assigned, batches_by_partition)
        engines, rebuilt = {}, {}
        for p in assigned:
            entity = self.stage.entity_partition(family, p)
            if p in previous:  # same generation: keep the partial sequence growing
                entity.sequence = previous[p].sequence
            if p in restored:
                snapshot = restored[p][0]
                entity.engine, entity.covered = snapshot.engine, snapshot.covered
                entity.engine.keep_hot_outlets(self.ctx.settings.hot_outlets)
                entity.engine.mark_all_dirty()
                self.ctx.clock.observe(entity.engine.latest_occurred_us)
            engines[p], rebuilt[p] = entity.engine, entity
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
                    yield decode_fact_batch(table.data[key])

        def in_flight():  # applied but in no table yet: on their way to the changelog
            for (fam, p), flying in self.facts.in_flight.items():
                if fam is family and p in engines:
                    covered = skip.get(p)
                    for batch, facts in flying.values():
                        if covered is None or batch not in covered:
                            yield p, facts
        pending = ((p, facts) for (fam, p), facts in self.facts.pending.items() if fam is family)
        count = apply_fact_batches(itertools.chain(stored(), in_flight(), pending), engines, self.ctx.kpi, self.ctx.clock)
        for p, batch in applied_keys:
            rebuilt[p].covered.add(batch)
        for p, (snapshot, _, _) in restored.items():
            self.facts.pend_again(family, p, snapshot.unwritten)
        seconds = time.perf_counter() - started
        self.ctx.metrics.rebuild_seconds.labels(family.value).observe(seconds)
        sources = collections.Counter(source for _, _, source in restored.values())
        sources["facts"] = len(assigned) - len(restored)
        for source in ("kept", "snapshot", "facts"):
            self.ctx.metrics.partition_rebuilds.labels(family.value, source).inc(sources[source])
        log.info("rebuilt %s partitions %s in %.2fs: %d restored from snapshots, %d kept from before the "
                 "rebalance, then %d facts applied", family.value, sorted(assigned), seconds,
                 sources["snapshot"], sources["kept"], count)
        self.recovered = True
        # State restored or re-applied: the snapshot files are gone (used or discarded), so the
        # next save comes soon and a kill does not redo this rebuild. A start from nothing has
        # nothing to lose to a kill yet and waits the regular interval: each background save costs
        # the worker a burst of copy-on-write faults (docs/performance.md).
        soon = SNAPSHOT_AFTER_REBUILD_SECONDS if restored or count else float("inf")
        self.next_snapshot_at = min(self.next_snapshot_at,
                                    time.monotonic() + min(self.ctx.settings.snapshot_interval_seconds, soon))

    def _take_snapshots(self, family: Family, assigned: set[int],
                        batches_by_partition: dict[int, list]) -> dict[int, tuple[EngineSnapshot, Any, str]]:
        """The snapshots this rebuild may use -- parked at the rebalance, saved at the last stop,
        or in the background -- for the assigned partitions: those whose covered batches are all
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
            flying_here = {batch for batch, _ in self.facts.in_flight.get((family, p), {}).values()}
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

    def snapshot_of(self, family: Family, partition: int, entity: EntityPartition) -> EngineSnapshot:
        """The partition's engine with what it holds beyond the acknowledged (covered) batches:
        its batches in flight, by id, and its facts not sent yet."""
        return EngineSnapshot(entity.engine, entity.covered, self.facts.pending_of(family, partition),
                              self.facts.in_flight_of(family, partition))

    def park(self, revoked: set[tuple[Family, int]]) -> None:
        """Keep the engines of revoked partitions for the next rebuild, which restores those that
        come back to this worker."""
        for key, entity in self.stage.entities.items():
            if key in revoked:
                self.parked[key] = self.snapshot_of(*key, entity)

    async def save_snapshots(self, app=None, **kwargs) -> None:
        """On stop (faust has stopped consuming): save each partition's engine for the next start.
        Blocking on purpose -- nothing else runs any more -- and best effort: a snapshot that is
        not saved costs the next start a rebuild from facts, nothing else."""
        self.report_background_save(self.saver.stop())
        entities = self.stage.entities
        if not self.ctx.settings.snapshot_on_stop or self.ctx.app.crash_reason is not None or not entities:
            return
        started, saved, size, unwritten = time.perf_counter(), 0, 0, 0
        for (family, partition), entity in list(entities.items()):
            snapshot = self.snapshot_of(family, partition, entity)
            try:
                size += self.snapshots.save(family, partition, snapshot)
                saved += 1
                unwritten += len(snapshot.unwritten) + sum(map(len, snapshot.in_flight.values()))
            except Exception:  # noqa: BLE001 - a failed save must not turn a clean stop into a crash
                log.exception("snapshot of %s partition %d not saved; the next start rebuilds it from facts",
                              family.value, partition)
        log.info("saved %d engine snapshots (%.1f MiB, %d facts not yet written) to %s in %.2fs", saved,
                 size / 2**20, unwritten, self.snapshots.directory, time.perf_counter() - started)

    def snapshot_if_due(self) -> None:
        """Every KPI_SNAPSHOT_INTERVAL, save every partition's engine from a forked copy of the
        process (BackgroundSaver). Called only where no applied fact is merely pending -- each is
        in a batch, acknowledged (covered) or on its way (in flight, carried by id) -- so the copy
        needs nothing the worker does afterwards."""
        self.report_background_save(self.saver.poll())
        interval = self.ctx.settings.snapshot_interval_seconds
        entities = self.stage.entities
        if (interval <= 0 or self.saver.running or time.monotonic() < self.next_snapshot_at
                or not self.recovered or self.ctx.app.rebalancing or not entities):
            return
        self.next_snapshot_at = time.monotonic() + interval
        snapshots = {(family, partition): self.snapshot_of(family, partition, entity)
                     for (family, partition), entity in entities.items()}
        try:
            self.saver.start(snapshots)
        except OSError as error:  # fork refused (memory, process limit): the next interval retries
            log.warning("background snapshot not started: %s", error)
            self.ctx.metrics.background_snapshots.labels("failed").inc()

    def report_background_save(self, report) -> None:
        if report is None:
            return
        if report.saved:
            self.ctx.metrics.background_snapshots.labels("saved").inc()
            self.ctx.metrics.background_snapshot_seconds.observe(report.seconds)
            log.info("saved %d engine snapshots in the background (%.1f MiB) in %.2fs", len(report.partitions),
                     report.size / 2**20, report.seconds)
        else:
            self.ctx.metrics.background_snapshots.labels("failed").inc()
            log.warning("background snapshot save of %d partitions did not finish (stopped after %.2fs, or "
                        "failed: see stderr above); the previous snapshot files stay", len(report.partitions),
                        report.seconds)
