"""The per-lead state (stream/core/leads.py) as the book keeps it: plain tuples the cyclic GC stops
walking, read back into the same lead. The lead KPIs themselves are pinned against the oracle in
test_engine_matches_oracle.py; this pins the representation the GC pause figures rely on."""

from __future__ import annotations

import gc

import orjson

from stream.core.engine import KpiEngine
from stream.core.leads import LeadState
from tests.unit.test_engine_matches_oracle import engine_settings
from tests.unit.worker.test_snapshots import apply_all


def lead_event(event_type: str, lead_id: str, event_id: str, occurred_at: str, **fields) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": event_type, "occurred_at": occurred_at, "lead_id": lead_id,
                         **fields})


def engine_with_leads() -> KpiEngine:
    settings = engine_settings(60, (600, 3600), (900,), 1800)
    engine = KpiEngine(settings, settings.clock.pinned_us)
    apply_all(engine, [
        lead_event("lead.created", "L1", "c1", "2026-11-24T11:00:00Z", rep_id="r1", region="north", value=1200),
        lead_event("lead.updated", "L1", "u1", "2026-11-24T11:10:00Z", stage="proposal", value=1500),
        lead_event("lead.won", "L1", "w1", "2026-11-24T11:40:00Z", value=1400),
        lead_event("lead.lost", "L1", "w2", "2026-11-24T11:45:00Z"),  # a second close: kept, ignored
        lead_event("lead.created", "L2", "c2", "2026-11-24T11:20:00Z", rep_id="r2"),
        lead_event("lead.updated", "L3", "u3", "2026-11-24T11:30:00Z", rep_id="r3"),  # no creation yet
    ])
    return engine


def test_stored_leads_drop_out_of_the_cyclic_gc_walk_after_one_collection():
    engine = engine_with_leads()
    # A tuple is dropped once everything in it is: one level of nesting per collection, and a
    # record nests three deep (record > owner > stamp).
    for _ in range(3):
        gc.collect()
    assert set(engine.leads.leads) == {"L1", "L2", "L3"}
    assert [lead for lead, record in engine.leads.leads.items() if gc.is_tracked(record)] == []


def test_a_lead_read_back_from_its_record_has_its_history_and_owner():
    engine = engine_with_leads()
    lead = LeadState("L1", *engine.leads.leads["L1"])
    assert lead.owner[1] == "r1" and lead.region[1] == "north"
    assert [given[1] for given in lead.values] == ["c1", "u1"]
    assert [close[1] for close in lead.closes] == ["w1", "w2"]
    assert lead.close()[1] == "w1", "the earliest close counts"
    assert lead.record() == engine.leads.leads["L1"]
    assert LeadState("L3", *engine.leads.leads["L3"]).created_us is None


def test_pipeline_velocity_is_published_rounded_half_even_to_cents():
    # one won lead: value 1.00, created 8 days before it was won (win rate 1, cycle 8 days)
    settings = engine_settings(60, (30 * 86400,), (900,), 1800)
    history = [
        lead_event("lead.created", "W", "c-w", "2026-11-10T12:00:00Z", rep_id="r1", value=1),
        lead_event("lead.won", "W", "w-w", "2026-11-18T12:00:00Z"),
    ]

    def velocity(open_leads: int) -> float:
        engine = KpiEngine(settings, settings.clock.pinned_us)
        opened = [lead_event("lead.created", f"O{n}", f"c-o{n}", "2026-11-20T12:00:00Z", rep_id="r1")
                  for n in range(open_leads)]
        apply_all(engine, history + opened)
        engine.advance(settings.clock.pinned_us)
        return next(v.value for v in engine.all_values() if v.kpi == "pipeline_velocity" and v.scope == "global")

    assert velocity(1) == 0.12  # exactly 0.125: half-even rounds down
    assert velocity(3) == 0.38  # exactly 0.375: half-even rounds up

