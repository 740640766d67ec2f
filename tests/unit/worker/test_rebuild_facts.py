"""The worker's rebuild loop (stream/worker/recovery.py `apply_fact_batches`) over stored facts: every
fact is an event accepted once, applied once -- also one stored twice (re-read after a crash and
written again) with facts between its copies that are past the dedupe horizon."""

from __future__ import annotations

import orjson

from stream.core.clock import clock_for
from stream.core.engine import KpiEngine
from stream.worker.recovery import apply_fact_batches
from tests.kpi_compare import kpi_differences
from tests.oracle import oracle_kpis
from tests.unit.test_engine_matches_oracle import AS_OF, AS_OF_US, engine_settings, oracle_settings
from tests.unit.worker.test_snapshots import values

DAY_US = 86_400_000_000


def order(event_id: str, outlet: str, occurred_at: str = "2026-11-24T11:00:00Z") -> str:
    return orjson.dumps({"event_id": event_id, "type": "order.placed", "occurred_at": occurred_at,
                         "outlet_id": outlet, "order_id": event_id, "amount": "2.50", "currency": "USD",
                         "lines": 1}).decode()


def fact(event_id: str, outlet: str, ref_us: int, occurred_at: str = "2026-11-24T11:00:00Z") -> list:
    return [outlet, event_id, ref_us, order(event_id, outlet, occurred_at)]


def test_a_fact_stored_twice_is_applied_once_even_with_facts_past_the_horizon_between_its_copies():
    # a 40-day window holds the twice-stored order: applied twice, its orders count would be 2
    settings = engine_settings(3600, (3600, 40 * 86400), (900,), 1800)
    engine = KpiEngine(settings, AS_OF_US)
    engine.deduper._sweep_at = 2  # left alone, its second admit would forget the first copy (past the horizon)
    first_ref = AS_OF_US - 30 * DAY_US  # read long ago (the dedupe horizon is 7 days)
    early = "2026-10-20T08:00:00Z"
    batches = [
        (0, [fact("a", "o1", first_ref, early)]),
        (0, [fact(f"b{n}", f"o{n}", AS_OF_US) for n in range(2, 6)]),
        (0, [fact("a", "o1", first_ref, early)]),  # the same fact again, from another writer
    ]
    apply_fact_batches(batches, {0: engine}, settings, clock_for(settings.clock))
    messages = [order("a", "o1", early).encode()] + [order(f"b{n}", f"o{n}").encode() for n in range(2, 6)]
    expected = oracle_kpis(messages, AS_OF, oracle_settings(settings))
    assert kpi_differences(values(engine), expected) == []
