"""Outlets at rest are packed into bytes (stream/core/outlet_packing.py, OutletBook.state): a packed
outlet unpacks equal field by field, the engine's values do not depend on which outlets are packed
when, only recently touched outlets stay objects, and snapshots carry packed outlets."""

from __future__ import annotations

import dataclasses
import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from stream.core.engine import Family, KpiEngine
from stream.core.outlet_packing import pack_outlet, unpack_outlet
from stream.core.outlet_state import OutletState
from stream.worker.snapshots import CoveredBatches, EngineSnapshot, SnapshotShelf, engine_fingerprint
from tests.kpi_compare import kpi_differences
from tests.oracle import oracle_kpis
from tests.unit.test_engine_matches_oracle import AS_OF, engine_settings, engine_values, histories, kpi_settings, oracle_settings
from tests.unit.core.test_outlets import engine_after, onboarding
from tests.unit.worker.test_snapshots import OWNER, apply_all, order, values


def field_types(state: OutletState) -> list:
    """Each field's value with the type of every atom in it, so that 5 and Decimal(5), or a list
    and a tuple, do not compare equal."""
    def typed(value):
        if isinstance(value, tuple):
            return ("tuple", [typed(item) for item in value])
        if isinstance(value, dict):
            return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
        return (type(value).__name__, str(value) if isinstance(value, Decimal) else value)
    return [typed(getattr(state, field.name)) for field in dataclasses.fields(OutletState)]


def roundtrip(book, state: OutletState) -> OutletState:
    packed = pack_outlet(state, book.canonical_attributes[state.attributes])
    assert type(packed) is bytes
    return OutletState(state.outlet_id, *unpack_outlet(packed, book.attribute_table))


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=histories(), settings=kpi_settings())
def test_a_packed_outlet_unpacks_equal_field_by_field_types_included(messages, settings):
    engine = KpiEngine(settings, settings.clock.pinned_us)
    apply_all(engine, messages)
    book = engine.outlets
    for outlet_id in set(book.hot) | {outlet_id for outlet_id, _ in book.cold.items()}:
        state = book.state(outlet_id)
        assert field_types(roundtrip(book, state)) == field_types(state)


def test_every_kind_of_field_survives_packing_amounts_as_the_same_decimals():
    engine = engine_after([
        onboarding("o1", "b1", occurred_at="2026-11-24T08:00:00Z"),
        {"event_id": "u1", "type": "outlet.updated", "occurred_at": "2026-11-24T12:00:10Z", "outlet_id": "o1",
         "rep_id": "r2"},  # two stamps: a tuple of five
        {"event_id": "v1", "type": "visit.completed", "occurred_at": "2026-11-24T11:10:00Z", "outlet_id": "o1",
         "visit_id": "visit-1", "rep_id": "r1"},
        {"event_id": "x1", "type": "order.placed", "occurred_at": "2026-11-24T11:11:00Z", "outlet_id": "o1",
         "order_id": "x1", "amount": "12.50", "currency": "USD", "lines": 2, "visit_id": "visit-1"},
        {"event_id": "x2", "type": "order.placed", "occurred_at": "2026-11-24T11:11:30Z", "outlet_id": "o1",
         "order_id": "x2", "amount": 1e2, "currency": "USD", "lines": 1, "rep_id": "r3"},
        # an order after a gap longer than the dormancy: a reactivation
        {"event_id": "x3", "type": "order.placed", "occurred_at": "2026-11-24T09:00:00Z", "outlet_id": "o1",
         "order_id": "x3", "amount": 0, "currency": "USD", "lines": 1},
    ])
    book = engine.outlets
    state = book.state("o1")
    assert (state.order_times and state.order_slots and state.reactivation_slots and state.orders_by_slot
            and state.visits and state.first_link_slot and isinstance(state.attribute_stamps, tuple))
    back = roundtrip(book, state)
    assert field_types(back) == field_types(state)
    assert [str(a) for a in back.orders_by_slot[3::5]] == [str(a) for a in state.orders_by_slot[3::5]]
    assert back.attributes is state.attributes, "unpacked outlets share the book's attribute tuple"


def test_an_onboarded_only_outlet_packs_into_its_stamp_and_five_bytes_or_thirteen_if_onboarded_apart():
    engine = engine_after([
        onboarding("o1", "b1"),
        # attributes set by an update, onboarded earlier without any: the onboarding is not the stamp's instant
        onboarding("o2", "u2", occurred_at="2026-11-24T10:00:00Z") | {"type": "outlet.updated"},
        {"event_id": "b2", "type": "outlet.onboarded", "occurred_at": "2026-11-24T09:00:00Z", "outlet_id": "o2"},
    ])
    book = engine.outlets
    for outlet_id, head in (("o1", 5), ("o2", 13)):
        state = book.state(outlet_id)
        packed = pack_outlet(state, book.canonical_attributes[state.attributes])
        assert len(packed) == head + len(state.attribute_stamps)
        assert field_types(roundtrip(book, state)) == field_types(state)


def test_only_recently_touched_outlets_stay_objects_and_the_one_in_hand_is_never_packed():
    engine = engine_after([onboarding(f"o{n}", f"b{n}") for n in range(10)], hot_outlets=2)
    book = engine.outlets
    assert 1 <= len(book.hot) <= 4 and "o9" in book.hot
    assert all(f"o{n}" not in book.hot and type(book.cold.get(f"o{n}")) is bytes for n in range(5))
    assert len(book) == 10
    in_hand = book.state("o0")
    assert book.hot["o0"] is in_hand
    book.state("o1")
    assert book.hot["o0"] is in_hand, "the outlet handed out is not packed by the next call"
    book.state("o2")
    book.state("o3")
    book.state("o4")
    assert "o0" not in book.hot, "once others were touched, it is"
    assert field_types(book.state("o0")) == field_types(in_hand)
    assert len(book) == 10


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=histories(), settings=kpi_settings())
def test_engine_equals_oracle_when_outlets_are_packed_as_soon_as_two_others_were_touched(messages, settings):
    actual = engine_values(messages, settings, hot_outlets=0)
    assert kpi_differences(actual, oracle_kpis(messages, AS_OF, oracle_settings(settings))) == []


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=histories(), settings=kpi_settings(), split=st.floats(0, 1))
def test_a_snapshot_with_packed_outlets_restores_and_goes_on_to_the_oracle_values(messages, settings, split):
    cut = int(len(messages) * split)
    with tempfile.TemporaryDirectory() as directory:
        engine = KpiEngine(settings, settings.clock.pinned_us, hot_outlets=0)
        apply_all(engine, messages[:cut])
        shelf = SnapshotShelf(Path(directory), engine_fingerprint(settings, OWNER))
        shelf.save(Family.OUTLET, 1, EngineSnapshot(engine, CoveredBatches(), []))
        restored = shelf.take(Family.OUTLET, 1).engine
        apply_all(restored, messages[cut:])
        actual = values(restored)
    assert kpi_differences(actual, oracle_kpis(messages, AS_OF, oracle_settings(settings))) == []


def test_a_snapshot_holds_cold_outlets_in_their_heap():
    settings = engine_settings(60, (600, 3600), (900,), 1800)
    engine = KpiEngine(settings, settings.clock.pinned_us, hot_outlets=1)
    apply_all(engine, [order(n, f"o{n}") for n in range(8)])
    with tempfile.TemporaryDirectory() as directory:
        shelf = SnapshotShelf(Path(directory), engine_fingerprint(settings, OWNER))
        shelf.save(Family.OUTLET, 1, EngineSnapshot(engine, CoveredBatches(), []))
        restored = shelf.take(Family.OUTLET, 1).engine
    at_rest = [outlet_id for outlet_id, _ in restored.outlets.cold.items() if outlet_id not in restored.outlets.hot]
    assert len(at_rest) >= 5 and len(restored.outlets) == 8
    assert values(restored) == values(engine)


def test_the_worker_keeps_as_many_outlets_hot_as_kpi_hot_outlets_says_and_rejects_nonsense():
    import pytest

    from stream.core.config import ConfigError, KpiSettings, ServiceSettings
    from stream.worker.app import KpiWorker

    assert ServiceSettings.from_env({}).hot_outlets == 8192
    with pytest.raises(ConfigError, match="KPI_HOT_OUTLETS must be 0 or more"):
        ServiceSettings.from_env({"KPI_HOT_OUTLETS": "-1"})
    with pytest.raises(ConfigError, match="KPI_HOT_OUTLETS must be a whole number"):
        ServiceSettings.from_env({"KPI_HOT_OUTLETS": "lots"})
    worker = KpiWorker(ServiceSettings(kpi=KpiSettings.from_env({}), app_id="hot-outlets", hot_outlets=3))
    assert worker.entity_stage.entity_partition(Family.OUTLET, 0).engine.outlets.hot_limit == 3
