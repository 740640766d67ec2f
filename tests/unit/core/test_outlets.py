"""The compact per-outlet state (stream/core/outlets.py): packed attribute stamps order events exactly as
(occurred_at, event_id) does, outlets share their attribute tuples, and orders of one slot and rep
sum into one record. The KPI values themselves are pinned against the oracle elsewhere
(test_engine_matches_oracle.py); these pin the representation the memory figures rely on."""

from __future__ import annotations

import orjson
from hypothesis import given, strategies as st

from stream.core.engine import KpiEngine
from stream.core.outlets import DEFAULT_HOT_OUTLETS
from stream.core.outlet_state import attribute_stamp
from tests.unit.test_engine_matches_oracle import AS_OF, engine_settings
from tests.unit.worker.test_snapshots import apply_all

# years 0001..9999 in microseconds, the range the decoder accepts
instants = st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999)
# any code point, lone surrogates included (JSON may carry them as \ud800 escapes)
event_ids = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)


@given(a=st.tuples(instants, event_ids), b=st.tuples(instants, event_ids))
def test_packed_attribute_stamps_sort_as_the_instant_then_the_event_id(a, b):
    packed_a, packed_b = attribute_stamp(*a), attribute_stamp(*b)
    assert (packed_a < packed_b) == (a < b)
    assert (packed_a == packed_b) == (a == b)


def test_a_tie_on_the_instant_goes_to_the_greater_event_id_including_prefixes_and_non_ascii():
    t = 1_700_000_000_000_000
    ordered = ["", "a", "a\x00", "ab", "b", "\ud7ff", "\ud800", "\ue000", "\U0001f600"]
    assert sorted(ordered) == ordered
    assert [attribute_stamp(t, i) for i in ordered] == sorted(attribute_stamp(t, i) for i in ordered)
    assert attribute_stamp(t - 1, "\U0010ffff") < attribute_stamp(t, "")


def engine_after(docs: list[dict], hot_outlets: int = DEFAULT_HOT_OUTLETS) -> KpiEngine:
    settings = engine_settings(60, (600, 3600), (900,), 1800)
    engine = KpiEngine(settings, settings.clock.pinned_us, hot_outlets)
    apply_all(engine, [orjson.dumps(doc) for doc in docs])
    return engine


def onboarding(outlet: str, event_id: str, occurred_at: str = AS_OF, **attributes) -> dict:
    return {"event_id": event_id, "type": "outlet.onboarded", "occurred_at": occurred_at, "outlet_id": outlet,
            "region": "north", "territory": "T1", "distributor_id": "d1", "channel": "gt", "rep_id": "r1",
            **attributes}


def test_outlets_with_the_same_attributes_hold_one_shared_tuple_and_one_stamp_each():
    engine = engine_after([onboarding("o1", "b1"), onboarding("o2", "b2")])
    first, second = engine.outlets.state("o1"), engine.outlets.state("o2")
    assert first.attributes == ("north", "T1", "d1", "gt", "r1")
    assert first.attributes is second.attributes
    assert isinstance(first.attribute_stamps, bytes), "one event set all five: one stamp, not five"


def test_a_later_update_of_one_attribute_keeps_the_other_stamps_and_an_earlier_one_changes_nothing():
    engine = engine_after([
        onboarding("o1", "b1", occurred_at="2026-11-24T10:00:00Z"),
        {"event_id": "u1", "type": "outlet.updated", "occurred_at": "2026-11-24T11:00:00Z", "outlet_id": "o1",
         "rep_id": "r2"},
        # older than the onboarding's stamp on the region, newer than nothing on the rep: ignored
        {"event_id": "u0", "type": "outlet.updated", "occurred_at": "2026-11-24T09:00:00Z", "outlet_id": "o1",
         "region": "south", "rep_id": "r9"},
    ])
    state = engine.outlets.state("o1")
    assert state.attributes == ("north", "T1", "d1", "gt", "r2")
    assert isinstance(state.attribute_stamps, tuple) and len(state.attribute_stamps) == 5
    assert state.attribute_stamps[0] < state.attribute_stamps[4]


def test_orders_of_one_slot_and_rep_sum_into_one_record_sorted_by_slot_and_other_reps_get_their_own():
    def order(event_id: str, minute: int, rep: str | None, amount: str) -> dict:
        doc = {"event_id": event_id, "type": "order.placed", "occurred_at": f"2026-11-24T10:{minute:02d}:10Z",
               "outlet_id": "o1", "order_id": event_id, "amount": amount, "currency": "USD", "lines": 2}
        return doc | ({"rep_id": rep} if rep else {})

    # arriving out of order: the records stay sorted by slot
    engine = engine_after([order("d", 2, "r1", "1"), order("a", 1, "r1", "1.10"), order("b", 1, "r1", "2.20"),
                           order("c", 1, None, "5")])
    flat = engine.outlets.state("o1").orders_by_slot
    records = [flat[i:i + 5] for i in range(0, len(flat), 5)]
    slot = engine.outlets.state("o1").order_times[0] // engine.settings.slot_us
    assert [(s - slot, rep, count, str(amount), lines) for s, rep, count, amount, lines in records] == [
        (0, "r1", 2, "3.30", 4), (0, None, 1, "5", 2), (1, "r1", 1, "1", 2)]
