"""stream/worker/lag.py: lag counted from where each held partition really is, series only for
held partitions, a stall clock, and the quick check after an assignment (fakes for faust)."""

from __future__ import annotations

import asyncio
from collections import namedtuple

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from stream.kafka import faust_internals
from stream.kafka.offsets import OffsetLedger
from stream.worker import lag as lag_module
from stream.worker.lag import LagObserver
from stream.worker.metrics import build_processor_metrics

TP = namedtuple("TP", "topic partition")
EVENTS = "sales.events"
ORDERS = "sales.orders"


class FakeConsumer:
    def __init__(self, ends: dict) -> None:
        self.ends = ends  # tp -> log end offset
        self.fetched: set = set()  # partitions aiokafka reported a highwater for

    def highwater(self, tp):
        return self.ends[tp] if tp in self.fetched else None

    async def highwaters(self, *tps):
        await asyncio.sleep(0)
        return {tp: self.ends[tp] for tp in tps if tp in self.ends}


class FakeApp:
    def __init__(self, ends: dict) -> None:
        self.consumer = FakeConsumer(ends)
        self.rebalancing = False


class FakeFacts:
    def held_back(self, seconds: float) -> bool:
        return False


class FakeGuard:
    def __init__(self) -> None:
        self.ledger = OffsetLedger()
        self.undelivered_rounds: dict = {}
        self.woken: list = []
        self.settled: list = []
        self.records_after_committed = True

    async def wake_undelivered(self, tp):
        self.woken.append(tp)
        return self.records_after_committed

    async def settle_idle_partition(self, tp, highwater):
        self.settled.append((tp, highwater))

    async def check_undelivered(self, tp, recovered, rounds_needed):
        self.undelivered_rounds[tp] = self.undelivered_rounds.get(tp, 0) + 1


def series(metrics, name: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            if sample.name == name:
                out[(sample.labels["topic"], sample.labels["partition"])] = sample.value
    return out


@pytest.fixture
def committed(monkeypatch):
    offsets: dict = {}

    async def committed_offsets(app, tps):
        await asyncio.sleep(0)
        return {tp: offsets[tp] for tp in tps}

    monkeypatch.setattr(faust_internals, "committed_offsets", committed_offsets)
    return offsets


def observer(ends: dict, recovered=lambda: True):
    metrics = build_processor_metrics()
    app, guard = FakeApp(ends), FakeGuard()
    return LagObserver(app, guard, FakeFacts(), metrics, {EVENTS, ORDERS}, recovered=recovered), metrics


def test_a_partition_that_delivered_nothing_counts_from_its_committed_offset_not_from_zero(committed):
    async def run():
        idle, behind = TP(EVENTS, 6), TP(EVENTS, 1)
        committed.update({idle: 1, behind: 200})
        lag, metrics = observer({idle: 1, behind: 250})
        lag.held = {idle, behind}
        await lag.refresh()
        assert series(metrics, "kpi_stream_consumer_lag") == {(EVENTS, "6"): 0, (EVENTS, "1"): 50}
        lag.guard.ledger.start(behind, 200)
        for offset in range(200, 240):
            assert lag.guard.ledger.admit_next(behind, offset)
        await lag.refresh()
        assert series(metrics, "kpi_stream_consumer_lag")[(EVENTS, "1")] == 10

    asyncio.run(run())


def test_only_held_partitions_have_series_whatever_was_revoked(committed):
    async def run():
        kept, moved, changelog = TP(EVENTS, 0), TP(ORDERS, 3), TP("kpi-test-outlet-facts-changelog", 3)
        committed.update({kept: 5, moved: 7})
        lag, metrics = observer({kept: 5, moved: 333})
        lag.assign({kept, moved, changelog})
        await lag.refresh()
        assert set(series(metrics, "kpi_stream_consumer_lag")) == {(EVENTS, "0"), (ORDERS, "3")}
        # a new assignment without `moved`, its revocation never seen: its series goes anyway
        lag.assign({kept})
        await lag.refresh()
        assert set(series(metrics, "kpi_stream_consumer_lag")) == {(EVENTS, "0")}
        assert set(series(metrics, "kpi_stream_partition_stalled_seconds")) == {(EVENTS, "0")}
        lag.revoke({kept})
        assert series(metrics, "kpi_stream_consumer_lag") == {}
        lag.watch.cancel()

    asyncio.run(run())


def test_answers_from_before_a_revocation_are_not_exported(committed):
    """A lag round awaiting the broker while the partition is revoked must not put it back."""
    async def run():
        tp = TP(ORDERS, 3)
        committed[tp] = 10
        lag, metrics = observer({tp: 336})
        lag.held = {tp}
        refreshing = asyncio.ensure_future(lag.refresh())
        await asyncio.sleep(0)  # inside the committed-offsets request
        lag.revoke({tp})
        await refreshing
        await lag.observe(recovered=True)
        assert series(metrics, "kpi_stream_consumer_lag") == {}

    asyncio.run(run())


def test_the_stall_clock_runs_only_while_there_are_records_to_read(committed, monkeypatch):
    async def run():
        tp = TP(ORDERS, 2)
        committed[tp] = 100
        lag, metrics = observer({tp: 100})
        clock = [1000.0]
        monkeypatch.setattr(lag_module.time, "monotonic", lambda: clock[0])
        lag.held = {tp}
        await lag.refresh()
        assert series(metrics, "kpi_stream_partition_stalled_seconds")[(ORDERS, "2")] == 0
        clock[0] += 60  # idle for a minute: not stalled
        lag.app.consumer.ends[tp] = 120  # records arrive: the clock starts
        await lag.refresh()
        assert series(metrics, "kpi_stream_partition_stalled_seconds")[(ORDERS, "2")] == 0
        clock[0] += 30
        await lag.refresh()
        assert series(metrics, "kpi_stream_partition_stalled_seconds")[(ORDERS, "2")] == 30
        lag.guard.ledger.start(tp, 100)
        lag.guard.ledger.admit_next(tp, 100)  # progress: back to 0
        clock[0] += 5
        await lag.refresh()
        assert series(metrics, "kpi_stream_partition_stalled_seconds")[(ORDERS, "2")] == 0
        clock[0] += 5
        await lag.refresh()
        assert series(metrics, "kpi_stream_partition_stalled_seconds")[(ORDERS, "2")] == 5

    asyncio.run(run())


def test_after_an_assignment_a_silent_partition_with_records_is_woken_within_seconds_and_idle_ones_never(
        committed, monkeypatch):
    monkeypatch.setattr(lag_module, "WATCH_STEP_SECONDS", 0.02)
    monkeypatch.setattr(lag_module, "FIRST_DELIVERY_GRACE_SECONDS", 0.1)

    async def run():
        silent, idle, delivering = TP(EVENTS, 6), TP(EVENTS, 2), TP(ORDERS, 1)
        committed.update({silent: 213, idle: 40, delivering: 0})
        ready = [False]
        lag, _ = observer({silent: 315, idle: 40, delivering: 3}, recovered=lambda: ready[0])
        lag.assign({silent, idle, delivering})
        await asyncio.sleep(0.3)
        assert lag.guard.woken == []  # not before the worker is ready
        ready[0] = True
        await asyncio.sleep(0.05)
        ledger = lag.guard.ledger
        ledger.start(delivering, 0)
        for offset in range(3):
            ledger.admit_next(delivering, offset)
        await asyncio.sleep(0.3)
        assert lag.guard.woken == [silent]
        ledger.start(silent, 213)
        for offset in range(213, 315):
            ledger.admit_next(silent, offset)
        await asyncio.wait_for(lag.watch, 2)
        assert lag.last_watch["unfinished"] == 0 and lag.last_watch["partitions_with_records"] == 2
        assert lag.last_watch["repairs"] == 1

    asyncio.run(run())


def test_a_committed_offset_followed_only_by_transaction_markers_is_idle_not_sought_again_and_again(
        committed, monkeypatch):
    monkeypatch.setattr(lag_module, "WATCH_STEP_SECONDS", 0.02)
    monkeypatch.setattr(lag_module, "FIRST_DELIVERY_GRACE_SECONDS", 0.05)

    async def run():
        tp = TP(EVENTS, 3)
        committed[tp] = 99
        lag, metrics = observer({tp: 100})
        lag.guard.records_after_committed = False
        lag.assign({tp})
        await asyncio.wait_for(lag.watch, 2)
        assert lag.guard.woken == [tp] and lag.last_watch["idle"] == 1
        assert series(metrics, "kpi_stream_consumer_lag") == {(EVENTS, "3"): 0}
        await lag.observe(recovered=True)
        assert lag.guard.undelivered_rounds == {}  # no more checks while nothing new arrives

    asyncio.run(run())
