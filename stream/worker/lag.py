"""Consumer lag per held partition, and the stall checks that run with each lag round."""

from __future__ import annotations

import logging
from typing import Any

from stream.kafka import faust_internals
from stream.kafka.holes import SEEK_TIMEOUT_SECONDS, OffsetGuard, bounded
from stream.worker.facts import FactLog
from stream.worker.metrics import ProcessorMetrics

log = logging.getLogger(__name__)

LAG_ROUND_SECONDS = 5.0  # how often `observe` samples each partition's progress
# Lag rounds a partition with records in the consumer's fetch buffer may go without a delivery
# before the stall checks act: turns come within seconds at saturation.
TURN_WAIT_ROUNDS = 6


class LagObserver:
    def __init__(self, app, guard: OffsetGuard, facts: FactLog, metrics: ProcessorMetrics,
                 watched_topics: set[str]) -> None:
        self.app = app
        self.guard = guard
        self.facts = facts
        self.metrics = metrics
        self.watched_topics = watched_topics  # the agents' topics (changelogs are read only in recovery)
        # tp -> ((applied up to, highwater) at the last lag round, rounds it has not moved)
        self.seen: dict[Any, tuple[tuple[int, int], int]] = {}

    async def observe(self, recovered: bool) -> None:
        consumer = self.app.consumer
        ledger = self.guard.ledger
        # The agents wait, or waited within the last lag round, for Kafka to acknowledge facts
        # (backpressure): partitions make no progress then, on purpose.
        held_back = self.facts.held_back(LAG_ROUND_SECONDS)
        for tp in self.app.assignor.assigned_actives():
            if tp.topic not in self.watched_topics:
                continue
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not fetched yet
                highwater = None
            if held_back:
                # Nothing applied because the agents wait: not a stall, and a re-read would only
                # drop what was fetched. The stall counts start again after.
                self.seen.pop(tp, None)
                self.guard.undelivered_rounds.pop(tp, None)
                if highwater is not None:
                    position = ledger.next_offset(tp) or 0
                    self._set_lag(tp, highwater - position)
                continue
            waiting = self._waiting_its_turn(tp)
            if not ledger.known(tp):
                await self.guard.check_undelivered(tp, recovered, TURN_WAIT_ROUNDS if waiting else 3)
            else:
                self.guard.undelivered_rounds.pop(tp, None)
            position = ledger.next_offset(tp) or 0
            if highwater is not None:
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
                    position = ledger.next_offset(tp) or 0
                self._set_lag(tp, highwater - position)

    def _set_lag(self, tp, lag: int) -> None:
        self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, lag))

    def _waiting_its_turn(self, tp) -> bool:
        """Records of `tp` sit in the consumer's fetch buffer: most likely it is not stalled, only
        waiting for its turn while the worker catches up, and seeking it would drop those records
        and fetch them again. So the stall checks give it TURN_WAIT_ROUNDS before acting."""
        try:
            aiokafka_consumer, _ = faust_internals.aiokafka_consumer_call(self.app)
            return faust_internals.fetch_buffered(aiokafka_consumer, tp)
        except Exception:  # noqa: BLE001 - no consumer yet (nothing buffered), or aiokafka moved it
            return False

    def revoke(self, revoked) -> None:
        for tp in revoked:
            self.seen.pop(tp, None)
            try:
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
