"""Consumer lag and stall time per held partition, and the stall checks and repairs.

Two gauges per partition this worker holds on the agents' topics, and none for any other:

- `kpi_stream_consumer_lag`: the log end offset minus the next offset to apply -- the ledger's
  next offset once the partition delivered something since its assignment, else the committed
  offset it starts from (before its first delivery the ledger knows nothing of it, and counting
  from 0 would report its whole log as lag). Recomputed at every assignment and lag round.
- `kpi_stream_partition_stalled_seconds`: seconds since the partition last made progress while
  it had records to read (0 when it is at the end; the clock starts when records arrive).

Which partitions are held comes from the assignment and revocation callbacks, not from faust's
assignor: between a revocation and the next assignment the assignor still answers the old
assignment, and a lag round in between would export partitions that may have moved elsewhere.
Every assignment withdraws the series of everything not in it, whatever was revoked before.

Stall repair: right after each assignment, as soon as the worker is ready (state recovered, no
rebalance), a watch checks every quarter second that each partition with records to read
delivers and reaches the end offset seen then; one that delivered nothing for a second is sought
to its committed offset (after a look at the log: a committed offset followed only by
transaction markers has nothing to read), one that stopped short of it for 1.5 s is settled
(`OffsetGuard.settle_idle_partition`). Partitions with records handed to faust past their next
offset (likely queued behind other partitions' in the agents' buffers) get 2 s, those with records
waiting in the consumer's fetch buffer (waiting their turn) 6 s. Idle partitions (committed or next offset at
the log end) are never touched. The lag rounds carry on the same checks, slower, ever after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from stream.kafka import faust_internals
from stream.kafka.batches import BatchProducer
from stream.kafka.holes import SEEK_TIMEOUT_SECONDS, OffsetGuard, bounded
from stream.worker.facts import FactLog
from stream.worker.metrics import ProcessorMetrics

log = logging.getLogger(__name__)

LAG_ROUND_SECONDS = 5.0  # how often `observe` samples each partition's progress
# Lag rounds a partition with records in the consumer's fetch buffer may go without a delivery
# before the stall checks act: turns come within seconds at saturation.
TURN_WAIT_ROUNDS = 6

# The watch after each assignment (seconds)
WATCH_STEP_SECONDS = 0.25
FIRST_DELIVERY_GRACE_SECONDS = 1.0  # a partition with records that delivered nothing since the worker was ready
STILL_GRACE_SECONDS = 1.5  # a delivering partition short of its end, not moving
# either, with records handed to faust past it (queued behind other partitions' records in the
# agents' buffers, or dropped by faust's read-offset filter: then a re-read is the cure)
HANDED_OVER_GRACE_SECONDS = 2.0
BUFFERED_GRACE_SECONDS = 6.0  # either, with records in the fetch buffer: waiting its turn
RETRY_SECONDS = 3.0  # between two repairs of one partition
WATCH_SECONDS = 120.0  # then the lag rounds alone carry on


class LagObserver:
    def __init__(self, app, guard: OffsetGuard, facts: FactLog, metrics: ProcessorMetrics,
                 watched_topics: set[str], recovered: Callable[[], bool] = lambda: True,
                 batches: BatchProducer | None = None) -> None:
        self.app = app
        self.guard = guard
        self.facts = facts
        self.batches = batches  # the worker's BatchProducer: a send waiting for room holds partitions back
        self.metrics = metrics
        self.watched_topics = watched_topics  # the agents' topics (changelogs are read only in recovery)
        self.recovered = recovered
        self.held: set = set()  # watched partitions of the current assignment
        self.exported: set = set()  # partitions with lag and stall series
        self.epoch = 0  # moves at each assignment and revocation: answers from before are stale
        # committed (or earliest) offset at the assignment: where a partition that delivered
        # nothing since starts
        self.start_offsets: dict[Any, int] = {}
        # partitions that delivered nothing whose log holds no records to read up to this offset
        # (only transaction markers after the committed offset)
        self.nothing_before: dict[Any, int] = {}
        # tp -> (position, monotonic time it last moved or records arrived; None at the end)
        self.progress: dict[Any, tuple[int, float | None]] = {}
        # tp -> ((applied up to, highwater) at the last lag round, rounds it has not moved)
        self.seen: dict[Any, tuple[tuple[int, int], int]] = {}
        self.watch: asyncio.Future | None = None
        self.last_watch: dict[str, Any] | None = None  # what the last finished watch measured

    # -- assignment ------------------------------------------------------------------------

    def assign(self, assigned) -> None:
        """A new assignment (faust's `on_partitions_assigned`): start over from it."""
        self.epoch += 1
        self.held = {tp for tp in assigned if tp.topic in self.watched_topics}
        self._withdraw(self.exported - self.held)
        self.start_offsets.clear()
        self.nothing_before.clear()
        for tp in list(self.progress):  # kept for partitions that stay: their stall clock goes on
            if tp not in self.held:
                del self.progress[tp]
        for tp in list(self.seen):
            if tp not in self.held:
                del self.seen[tp]
        if self.watch is not None and not self.watch.done():
            self.watch.cancel()
        self.watch = asyncio.ensure_future(self._watch_after_assignment(self.epoch))

    def revoke(self, revoked) -> None:
        self.epoch += 1
        revoked = set(revoked)
        self.held -= revoked
        self._withdraw(revoked | (self.exported - self.held))
        for tp in revoked:
            self.seen.pop(tp, None)
            self.start_offsets.pop(tp, None)
            self.nothing_before.pop(tp, None)

    def _withdraw(self, tps) -> None:
        for tp in tps:
            self.exported.discard(tp)
            for gauge in (self.metrics.consumer_lag, self.metrics.partition_stalled):
                try:
                    gauge.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass

    def watching(self) -> bool:
        return self.watch is not None and not self.watch.done()

    # -- lag and stall time ---------------------------------------------------------------------

    def position(self, tp) -> int | None:
        """The next offset to apply: the ledger's once the partition delivered, else where it starts."""
        applied = self.guard.ledger.next_offset(tp)
        if applied is not None:
            return applied
        start = self.start_offsets.get(tp)
        if start is None:
            return None
        return max(start, self.nothing_before.get(tp, start))

    async def refresh(self) -> dict:
        """Recompute both gauges of every held partition; returns their end offsets."""
        epoch, held = self.epoch, set(self.held)
        consumer = self.app.consumer
        ends: dict = {}
        try:
            unstarted = [tp for tp in held if not self.guard.ledger.known(tp) and tp not in self.start_offsets]
            if unstarted:
                starts = await faust_internals.committed_offsets(self.app, unstarted)
                if epoch == self.epoch:
                    self.start_offsets.update(starts)
            for tp in held:
                try:
                    highwater = consumer.highwater(tp)
                except Exception:  # noqa: BLE001 - not fetched yet
                    highwater = None
                if highwater is not None:
                    ends[tp] = highwater
            missing = [tp for tp in held if tp not in ends]
            if missing:
                asked = await consumer.highwaters(*missing)
                for tp in missing:
                    end = asked.get(tp)
                    if end is not None:
                        ends[tp] = end
        except Exception as error:  # noqa: BLE001 - no consumer yet, a rebalance, a slow broker: next round
            log.debug("lag: offsets not available (%r)", error)
        if epoch != self.epoch:
            return {}  # the assignment changed meanwhile: these answers may be of partitions held elsewhere now
        now = time.monotonic()
        for tp, end in ends.items():
            if tp not in self.held:
                continue
            position = self.position(tp)
            if position is None:
                continue
            self._set(tp, end - position, self._stalled_for(tp, position, end, now))
        return ends

    def _stalled_for(self, tp, position: int, end: int, now: float) -> float:
        if position >= end:
            self.progress[tp] = (position, None)
            return 0.0
        last = self.progress.get(tp)
        if last is None or last[0] != position or last[1] is None:
            self.progress[tp] = (position, now)  # moved, or records arrived: the clock starts
            return 0.0
        return now - last[1]

    def _set(self, tp, lag: int, stalled: float) -> None:
        labels = (tp.topic, str(tp.partition))
        self.metrics.consumer_lag.labels(*labels).set(max(0, lag))
        self.metrics.partition_stalled.labels(*labels).set(round(stalled, 1))
        self.exported.add(tp)

    # -- the lag round ----------------------------------------------------------------------------

    async def observe(self, recovered: bool) -> None:
        self._withdraw(self.exported - self.held)
        # The agents wait, or waited within the last lag round, for Kafka to acknowledge facts
        # (backpressure) or for room in the producer's queue (a broker holding writes back):
        # partitions make no progress then, on purpose.
        held_back = self.facts.held_back(LAG_ROUND_SECONDS) or (
            self.batches is not None and self.batches.held_back(LAG_ROUND_SECONDS))
        # right after an assignment the watch checks, faster
        checks = not held_back and not self.watching()
        epoch = self.epoch
        for tp in sorted(self.held):
            if epoch != self.epoch:
                break
            if not checks:
                # Nothing applied because the agents wait: not a stall, and a re-read would only
                # drop what was fetched. The stall counts start again after.
                self.seen.pop(tp, None)
                self.guard.undelivered_rounds.pop(tp, None)
                continue
            await self._check(tp, recovered)
        await self.refresh()

    async def _check(self, tp, recovered: bool) -> None:
        ledger = self.guard.ledger
        waiting = self._waiting_its_turn(tp)
        if not ledger.known(tp):
            highwater = self._highwater(tp)
            if tp in self.nothing_before and (highwater is None or highwater <= self.nothing_before[tp]):
                return  # nothing but transaction markers to read: idle
            await self.guard.check_undelivered(tp, recovered, TURN_WAIT_ROUNDS if waiting else 3)
            return
        self.guard.undelivered_rounds.pop(tp, None)
        highwater = self._highwater(tp)
        if highwater is None:
            return
        position = ledger.next_offset(tp) or 0
        seen, rounds = self.seen.get(tp, ((-1, -1), 0))
        rounds = rounds + 1 if seen == (position, highwater) else 0  # rounds with nothing applied
        self.seen[tp] = ((position, highwater), rounds)
        needed = TURN_WAIT_ROUNDS if waiting else 2
        if rounds >= needed and position < highwater and not self.app.rebalancing:
            try:
                await bounded(self.guard.settle_idle_partition(tp, highwater), 2 * SEEK_TIMEOUT_SECONDS + 5)
            except TimeoutError:
                log.warning("offsets: settling %s[%s] did not finish; next lag round retries",
                            tp.topic, tp.partition)

    def _highwater(self, tp) -> int | None:
        try:
            return self.app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not fetched yet
            return None

    def _waiting_its_turn(self, tp) -> bool:
        """Records of `tp` sit in the consumer's fetch buffer: most likely it is not stalled, only
        waiting for its turn while the worker catches up, and seeking it would drop those records
        and fetch them again. So the stall checks give it longer before acting."""
        try:
            aiokafka_consumer, _ = faust_internals.aiokafka_consumer_call(self.app)
            return faust_internals.fetch_buffered(aiokafka_consumer, tp)
        except Exception:  # noqa: BLE001 - no consumer yet (nothing buffered), or aiokafka moved it
            return False

    def _fetch_position(self, tp) -> int | None:
        try:
            aiokafka_consumer, _ = faust_internals.aiokafka_consumer_call(self.app)
            return faust_internals.fetch_position(aiokafka_consumer, tp)
        except Exception:  # noqa: BLE001 - no consumer yet, or aiokafka moved it
            return None

    def _handed_over(self, tp, position: int | None, at_ready: int | None) -> bool:
        """aiokafka handed faust records of `tp` past `position` since the worker was ready: they
        may be on their way through the agents' buffers."""
        fetched = self._fetch_position(tp)
        return (fetched is not None and position is not None and fetched > position
                and (at_ready is None or fetched > at_ready))

    # -- the watch after an assignment ------------------------------------------------------------

    async def _watch_after_assignment(self, epoch: int) -> None:
        try:
            await self._watch(epoch)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the lag rounds carry on
            log.exception("offsets: the check after the assignment failed; the lag rounds carry on")

    async def _watch(self, epoch: int) -> None:
        while epoch == self.epoch and (not self.recovered() or self.app.rebalancing):
            await asyncio.sleep(WATCH_STEP_SECONDS)
        if epoch != self.epoch:
            return
        ready_at = time.monotonic()
        ends = await self.refresh()  # lag from the committed offsets, right away
        if epoch != self.epoch:
            return
        targets = {}
        for tp, end in ends.items():
            position = self.position(tp)
            if position is not None and position < end:
                targets[tp] = end
        with_records = len(targets)
        # aiokafka's position then: records handed to faust before the worker was ready and not
        # applied were dropped with the rebalance (faust clears the agents' buffers), not queued
        handed_at_ready = {tp: self._fetch_position(tp) for tp in targets}
        moved: dict[Any, tuple[int | None, float]] = {tp: (self.position(tp), ready_at) for tp in targets}
        first_delivery: dict[Any, float] = {}
        caught_up: dict[Any, float] = {}
        last_repair: dict[Any, float] = {}
        repairs = 0
        idle = 0
        while targets and epoch == self.epoch and time.monotonic() - ready_at < WATCH_SECONDS:
            await asyncio.sleep(WATCH_STEP_SECONDS)
            if epoch != self.epoch:
                return
            now = time.monotonic()
            held_back = self.facts.held_back(WATCH_STEP_SECONDS)
            due = []
            for tp, target in list(targets.items()):
                known = self.guard.ledger.known(tp)
                if known and tp not in first_delivery:
                    first_delivery[tp] = now - ready_at
                position = self.position(tp)
                if position is not None and position >= target:
                    caught_up[tp] = now - ready_at
                    del targets[tp]
                    continue
                if position != moved[tp][0] or held_back:  # held back: waiting on purpose
                    moved[tp] = (position, now)
                    continue
                grace = (BUFFERED_GRACE_SECONDS if self._waiting_its_turn(tp)
                         else HANDED_OVER_GRACE_SECONDS if self._handed_over(tp, position, handed_at_ready.get(tp))
                         else STILL_GRACE_SECONDS if known else FIRST_DELIVERY_GRACE_SECONDS)
                if now - moved[tp][1] >= grace and now - last_repair.get(tp, float("-inf")) >= RETRY_SECONDS:
                    last_repair[tp] = now
                    due.append((tp, known, target))
            if due:
                results = await asyncio.gather(*(self._repair(tp, known, target) for tp, known, target in due))
                if epoch != self.epoch:
                    return
                for (tp, _, _), result in zip(due, results):
                    if result is False and tp in targets:  # nothing to read after all
                        self.nothing_before[tp] = targets.pop(tp)
                        idle += 1
                    elif result:
                        repairs += 1
        if epoch != self.epoch:
            return
        seconds = time.monotonic() - ready_at
        self.last_watch = {
            "partitions_with_records": with_records, "repairs": repairs, "idle": idle,
            "first_delivery_seconds": max(first_delivery.values(), default=0.0),
            "caught_up_seconds": max(caught_up.values(), default=0.0), "unfinished": len(targets),
        }
        if targets:
            log.warning("offsets: %d of %d assigned partitions with records to read did not reach the end offset "
                        "seen when the worker was ready within %.0fs: %s; the lag rounds carry on",
                        len(targets), with_records, seconds,
                        ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(targets)))
        else:
            log.info("offsets: after the assignment, every partition with records to read delivered within %.2fs "
                     "and reached the end offset seen when the worker was ready within %.2fs "
                     "(%d partitions with records, %d repaired, %d with nothing but transaction markers)",
                     self.last_watch["first_delivery_seconds"], self.last_watch["caught_up_seconds"],
                     with_records, repairs, idle)
        await self.refresh()

    async def _repair(self, tp, known: bool, target: int) -> bool | None:
        try:
            if not known:
                return await bounded(self.guard.wake_undelivered(tp), 2 * SEEK_TIMEOUT_SECONDS + 5)
            await bounded(self.guard.settle_idle_partition(tp, target), 2 * SEEK_TIMEOUT_SECONDS + 5)
            return True
        except TimeoutError:
            log.warning("offsets: repairing %s[%s] did not finish; retrying", tp.topic, tp.partition)
        except Exception:  # noqa: BLE001 - the watch and the lag rounds must keep running
            log.exception("offsets: repairing %s[%s] failed; retrying", tp.topic, tp.partition)
        return None
