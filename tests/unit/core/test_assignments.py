"""Outlets per (territory, assigned rep) (stream/core/assignments.py, kept by OutletBook): equal to a
brute-force count over the raw events by spec 2's rule for current attributes (tests/oracle.py,
`territory_rep_outlets`) whatever the arrival order, repeats, late updates and packing of outlets at
rest; and equal to a walk over the book's outlets, packed ones included, which the engine never does."""

from __future__ import annotations

import pickle

import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from stream.core.assignments import TerritoryReps, territory_rep
from stream.core.engine import KpiEngine
from stream.core.outlets import DEFAULT_HOT_OUTLETS
from tests.oracle import territory_rep_outlets
from tests.unit.core.test_outlets import engine_after, onboarding
from tests.unit.test_engine_matches_oracle import AS_OF, histories, kpi_settings, oracle_settings
from tests.unit.worker.test_snapshots import apply_all


def counts(engine: KpiEngine) -> dict[tuple[str, str], int]:
    return dict(engine.outlets.assignments.outlets())


def walked(engine: KpiEngine) -> dict[tuple[str, str], int]:
    """The same counts from every outlet's state, hot or unpacked from rest (a test's luxury)."""
    book = engine.outlets
    attributes = {outlet_id: state.attributes for outlet_id, state in book.hot.items()}
    for outlet_id, _packed in book.cold.items():
        if outlet_id not in attributes:
            attributes[outlet_id] = book.state(outlet_id).attributes
    out: dict[tuple[str, str], int] = {}
    for outlet_attributes in attributes.values():
        pair = territory_rep(outlet_attributes)
        out[pair] = out.get(pair, 0) + 1
    return out


def updated(outlet: str, event_id: str, occurred_at: str, **attributes) -> dict:
    return {"event_id": event_id, "type": "outlet.updated", "occurred_at": occurred_at, "outlet_id": outlet,
            **attributes}


def placed(outlet: str, event_id: str, occurred_at: str = AS_OF, rep_id: str | None = None) -> dict:
    doc = {"event_id": event_id, "type": "order.placed", "occurred_at": occurred_at, "outlet_id": outlet,
           "order_id": event_id, "amount": "1.00", "currency": "USD", "lines": 1}
    return doc | ({"rep_id": rep_id} if rep_id else {})


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=histories(), settings=kpi_settings(), hot=st.sampled_from([1, 2, DEFAULT_HOT_OUTLETS]),
       order=st.randoms(use_true_random=False))
def test_counts_equal_the_brute_force_count_from_the_raw_events_in_any_order_and_packing(messages, settings,
                                                                                         hot, order):
    """Outlets onboarded and updated field by field, moving between territories and reps, updates
    older than the ones in force, byte-identical repeats, rejects, orders and visits before any
    outlet event; with 1 or 2 hot outlets nearly every event unpacks an outlet from rest."""
    expected = territory_rep_outlets(messages, AS_OF, oracle_settings(settings))
    for arrival in (messages, order.sample(messages, len(messages))):
        engine = KpiEngine(settings, settings.clock.pinned_us, hot)
        apply_all(engine, arrival)
        assert counts(engine) == expected
        assert walked(engine) == expected
        assert sum(expected.values()) == len(engine.outlets)


def test_onboarding_counts_an_outlet_at_its_territory_and_rep():
    engine = engine_after([onboarding("o1", "b1"), onboarding("o2", "b2"), onboarding("o3", "b3", rep_id="r2"),
                           onboarding("o4", "b4", territory="T2", rep_id=None)])
    assert counts(engine) == {("T1", "r1"): 2, ("T1", "r2"): 1, ("T2", "unassigned"): 1}


def test_an_update_moves_the_outlet_between_territories_and_reps_and_an_emptied_pair_disappears():
    engine = engine_after([
        onboarding("o1", "b1", occurred_at="2026-11-24T10:00:00Z"),
        onboarding("o2", "b2", occurred_at="2026-11-24T10:00:00Z"),
        updated("o1", "u1", "2026-11-24T11:00:00Z", territory="T2"),  # the rep goes with it
        updated("o2", "u2", "2026-11-24T11:00:00Z", rep_id="r2"),  # stays in T1, another rep
        updated("o2", "u3", "2026-11-24T11:30:00Z", territory="T2", rep_id="r1"),
    ])
    assert counts(engine) == {("T2", "r1"): 2}


def test_an_update_older_than_the_attribute_in_force_or_a_repeat_moves_nothing():
    engine = engine_after([
        onboarding("o1", "b1", occurred_at="2026-11-24T10:00:00Z"),
        updated("o1", "u1", "2026-11-24T11:00:00Z", territory="T2"),
        updated("o1", "u0", "2026-11-24T10:30:00Z", territory="T9", rep_id="r9"),  # late: older than both
        updated("o1", "u1", "2026-11-24T11:00:00Z", territory="T2"),  # the same event again: a duplicate
        updated("o1", "u2", "2026-11-24T11:00:00Z", rep_id="r2", territory=None),  # null keeps T2
    ])
    assert counts(engine) == {("T2", "r2"): 1}
    engine = engine_after([
        updated("o1", "u1", "2026-11-24T11:00:00Z", territory="T2"),
        onboarding("o1", "b1", occurred_at="2026-11-24T10:00:00Z"),  # onboarding arrives late: rep r1 only
    ])
    assert counts(engine) == {("T2", "r1"): 1}


def test_an_outlet_named_only_by_orders_or_visits_counts_as_unassigned_until_an_outlet_event_places_it():
    engine = engine_after([placed("o1", "x1", rep_id="r7"),
                           {"event_id": "v1", "type": "visit.completed", "occurred_at": AS_OF, "outlet_id": "o2",
                            "visit_id": "v1", "rep_id": "r7"}])
    assert counts(engine) == {("unassigned", "unassigned"): 2}, "an order's or visit's rep is not the assigned one"
    apply_all(engine, [orjson.dumps(onboarding("o1", "b1"))])
    assert counts(engine) == {("unassigned", "unassigned"): 1, ("T1", "r1"): 1}


def test_region_distributor_or_channel_changes_and_orders_leave_the_counts_alone():
    engine = engine_after([onboarding("o1", "b1", occurred_at="2026-11-24T10:00:00Z")])
    view = engine.outlets.assignments.outlets()
    apply_all(engine, [orjson.dumps(doc) for doc in (
        updated("o1", "u1", "2026-11-24T11:00:00Z", region="south", channel="mt", distributor_id="d9"),
        placed("o1", "x1", rep_id="r5"))])
    assert dict(view) == {("T1", "r1"): 1}, "the view is live, and nothing moved"


def test_outlets_packed_at_rest_move_from_their_packed_attributes():
    """Two hot outlets at most: every outlet below is packed and unpacked between its events."""
    docs = [onboarding(f"o{n}", f"b{n}", occurred_at="2026-11-24T10:00:00Z", territory=f"T{n % 3}",
                       rep_id=f"r{n % 4}") for n in range(40)]
    docs += [updated(f"o{n}", f"u{n}", "2026-11-24T11:00:00Z", territory="T9") for n in range(0, 40, 5)]
    docs += [updated(f"o{n}", f"w{n}", "2026-11-24T11:10:00Z", rep_id="r9") for n in range(0, 40, 2)]
    engine = engine_after(docs, hot_outlets=2)
    assert len(engine.outlets.cold) >= 36, "most outlets are at rest"
    expected = territory_rep_outlets([orjson.dumps(doc) for doc in docs], AS_OF)
    assert counts(engine) == walked(engine) == expected
    assert expected[("T9", "r9")] == 4 and sum(expected.values()) == 40


def test_the_counts_travel_with_an_engine_snapshot_and_go_on_from_there():
    engine = engine_after([onboarding("o1", "b1"), onboarding("o2", "b2")], hot_outlets=1)
    restored = pickle.loads(pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL))
    assert counts(restored) == {("T1", "r1"): 2}
    apply_all(restored, [orjson.dumps(updated("o1", "u1", "2026-11-24T12:00:40Z", rep_id="r2"))])
    assert counts(restored) == walked(restored) == {("T1", "r1"): 1, ("T1", "r2"): 1}
    assert counts(engine) == {("T1", "r1"): 2}, "the original is untouched"


def test_a_move_within_a_pair_changes_nothing_and_the_last_outlet_takes_its_pair_along():
    reps = TerritoryReps()
    reps.add((None,) * 5)
    reps.move((None,) * 5, ("north", "T1", "d1", "gt", "r1"))
    reps.move(("north", "T1", "d1", "gt", "r1"), ("south", "T1", "d2", "mt", "r1"))
    assert dict(reps.outlets()) == {("T1", "r1"): 1}
    reps.move(("south", "T1", "d2", "mt", "r1"), ("south", None, "d2", "mt", "r1"))
    assert dict(reps.outlets()) == {("unassigned", "r1"): 1}
