"""Property: on random event histories the engine equals the brute-force oracle, for every KPI,
window, horizon and scope.

Histories are small worlds (a few outlets, reps, territories, leads, visit ids) over about two
hours with one-minute slots and windows of a few slots, so windows, dormancy gaps, conversion
horizons and slot edges are all crossed often: events out of order, byte-identical duplicates,
outlets moving territory and rep, onboarding after first orders, orders before their visits,
leads closed twice, owner changes, events in a later slot than as_of, and some rejects.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from stream.core.config import ClockSetting, KpiSettings
from stream.core.outlets import DEFAULT_HOT_OUTLETS
from stream.replay import replay_lines
from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us
from stream.stages.updates import update_key
from tests.kpi_compare import kpi_differences, oracle_settings, values_of
from tests.oracle import oracle_kpis

AS_OF = "2026-11-24T12:00:30Z"
AS_OF_US = parse_rfc3339_us(AS_OF)

OUTLETS = ["o1", "o2", "o3", "o|4"]
REPS = ["r1", "r2", "r3"]
TERRITORIES = ["T1", "T2", "T%3"]
REGIONS = ["north", "south"]
LEADS = ["L1", "L2", "L3"]
VISITS = ["v1", "v2", "v3"]
KINDS = ["call", "email", "meeting", "demo"]


def engine_settings(slot: int, windows: tuple[int, ...], horizons: tuple[int, ...], dormancy: int) -> KpiSettings:
    return KpiSettings(
        slot_seconds=slot, windows_seconds=windows, conversion_horizons_seconds=horizons,
        dormancy_seconds=dormancy, clock=ClockSetting("pinned", AS_OF_US),
    )




# Offsets from as_of in milliseconds: mostly whole seconds (slot edges), some fractions, a few
# in the future (inside and beyond the 5-minute tolerance).
offsets_ms = st.one_of(
    st.integers(min_value=-7200, max_value=0).map(lambda s: s * 1000),
    st.integers(min_value=-7_200_000, max_value=0),
    st.integers(min_value=1, max_value=400).map(lambda s: s * 1000),
)


def when(offset_ms: int, zone: str) -> str:
    t = AS_OF_US + offset_ms * 1000
    if zone == "Z":
        return format_rfc3339_us(t)
    # same instant written with a +07:00 offset
    local = format_rfc3339_us(t + 7 * 3600 * 1_000_000)
    return local[:-1] + "+07:00"


maybe = lambda values: st.one_of(st.none(), st.sampled_from(values))  # noqa: E731


@st.composite
def event_docs(draw, index: int):
    kind = draw(st.sampled_from(
        ["onboarded", "updated", "order", "order", "order", "visit", "visit",
         "lead.created", "lead.updated", "lead.won", "lead.lost", "activity"]
    ))
    occurred = when(draw(offsets_ms), draw(st.sampled_from(["Z", "+07"])))
    base = {"event_id": f"e{index}", "occurred_at": occurred}
    outlet = draw(st.sampled_from(OUTLETS))
    if kind in ("onboarded", "updated"):
        doc = {**base, "type": f"outlet.{kind}", "outlet_id": outlet, "region": draw(maybe(REGIONS)),
               "territory": draw(maybe(TERRITORIES)), "channel": draw(maybe(["gt", "mt"])),
               "distributor_id": draw(maybe(["d1", "d2"])), "rep_id": draw(maybe(REPS))}
        return {k: v for k, v in doc.items() if v is not None or draw(st.booleans())}
    if kind == "order":
        amount = draw(st.one_of(
            st.integers(min_value=0, max_value=500),
            st.decimals(min_value=0, max_value=999, places=3, allow_nan=False).map(str),
            st.sampled_from([0.1, 0.2, 19.99, 7.875]),
        ))
        doc = {**base, "type": "order.placed", "outlet_id": outlet, "order_id": f"ord{index}",
               "amount": amount, "currency": "USD", "lines": draw(st.integers(min_value=1, max_value=9))}
        if draw(st.booleans()):
            doc["rep_id"] = draw(st.sampled_from(REPS))
        if draw(st.booleans()):
            doc["visit_id"] = draw(st.sampled_from(VISITS))
        return doc
    if kind == "visit":
        return {**base, "type": "visit.completed", "outlet_id": outlet, "visit_id": draw(st.sampled_from(VISITS)),
                "rep_id": draw(st.sampled_from(REPS))}
    lead = draw(st.sampled_from(LEADS))
    if kind == "lead.created":
        doc = {**base, "type": kind, "lead_id": lead, "rep_id": draw(st.sampled_from(REPS)),
               "value": draw(st.one_of(st.none(), st.integers(0, 1000), st.sampled_from([12.5, 0.01])))}
        if draw(st.booleans()):
            doc["region"] = draw(st.sampled_from(REGIONS))
        return doc
    if kind == "lead.updated":
        return {**base, "type": kind, "lead_id": lead, "rep_id": draw(maybe(REPS)),
                "value": draw(st.one_of(st.none(), st.integers(0, 1000))), "region": draw(maybe(REGIONS)),
                "stage": draw(maybe(["qualified", "proposal"]))}
    if kind in ("lead.won", "lead.lost"):
        doc = {**base, "type": kind, "lead_id": lead}
        if kind == "lead.won" and draw(st.booleans()):
            doc["value"] = draw(st.integers(0, 1000))
        return doc
    return {**base, "type": "activity.logged", "rep_id": draw(st.sampled_from(REPS)), "kind": draw(st.sampled_from(KINDS)),
            "outlet_id": draw(maybe(OUTLETS))}


@st.composite
def histories(draw):
    count = draw(st.integers(min_value=1, max_value=60))
    messages: list[bytes] = []
    for index in range(count):
        roll = draw(st.integers(0, 19))
        if roll == 0 and messages:  # byte-identical duplicate of an earlier message
            messages.append(draw(st.sampled_from(messages)))
        elif roll == 1:  # a reject: bad currency
            messages.append(orjson.dumps({"event_id": f"x{index}", "type": "order.placed", "occurred_at": AS_OF,
                                          "outlet_id": "o1", "order_id": "z", "amount": 1, "currency": "EUR",
                                          "lines": 1}))
        else:
            messages.append(orjson.dumps(draw(event_docs(index))))
    return messages


@st.composite
def kpi_settings(draw):
    slot = draw(st.sampled_from([60, 120]))
    windows = tuple(sorted(set(draw(st.lists(st.integers(1, 40), min_size=1, max_size=3)))))
    horizons = tuple(sorted(set(draw(st.lists(st.integers(1, 1800), min_size=1, max_size=2)))))
    dormancy = draw(st.integers(0, 2400))
    return engine_settings(slot, tuple(w * slot for w in windows), horizons, dormancy)


def engine_values(messages: list[bytes], settings: KpiSettings, hot_outlets: int = DEFAULT_HOT_OUTLETS) -> dict[str, dict]:
    engine, _report = replay_lines(iter(messages), settings, None, hot_outlets)
    return values_of(engine)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=histories(), settings=kpi_settings())
def test_engine_equals_oracle_on_random_histories(messages, settings):
    expected = oracle_kpis(messages, AS_OF, oracle_settings(settings))
    actual = engine_values(messages, settings)
    assert kpi_differences(actual, expected) == []


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=histories(), settings=kpi_settings(), order=st.randoms(use_true_random=False))
def test_arrival_order_of_distinct_events_does_not_change_any_kpi(messages, settings, order):
    distinct = list(dict.fromkeys(messages))
    shuffled = distinct[:]
    order.shuffle(shuffled)
    assert kpi_differences(engine_values(shuffled, settings), engine_values(distinct, settings)) == []


def test_slot_edges_of_the_default_windows_match_the_oracle():
    """As_of exactly on a slot start and orders exactly W before it: the oldest slot is out."""
    settings = engine_settings(60, (7 * 86400, 30 * 86400), (7 * 86400,), 30 * 86400)
    docs = []
    for n, days in enumerate([7, 30, 30 - 1 / 1440, 7 - 1 / 1440, 0]):
        t = AS_OF_US - int(days * 86400) * 1_000_000
        docs.append({"event_id": f"edge{n}", "type": "order.placed", "occurred_at": format_rfc3339_us(t),
                     "outlet_id": f"edge{n}", "order_id": "x", "amount": "1.00", "currency": "USD", "lines": 1})
    messages = [orjson.dumps(d) for d in docs]
    expected = oracle_kpis(messages, AS_OF, oracle_settings(settings))
    assert kpi_differences(engine_values(messages, settings), expected) == []
    assert expected["active_accounts|7d|global|all"]["value"] == 2  # 7d-1min and today


def test_an_outlet_moved_after_a_long_history_leaves_each_window_on_time_in_its_new_territory():
    """A move carries only contributions still open at the clock's slot (stream/core/outlets.py
    `_contributions_by_rep`): orders and visits one slot either side of the longest window's
    edge, a year of older ones, then two moves; the values must equal the oracle's at the move
    and as the clock passes each window's edge, where a dropped closing delta would show."""
    day, slot = 86400, 60
    settings = engine_settings(slot, (7 * day, 30 * day), (7 * day,), 30 * day)
    edge_us = AS_OF_US // (slot * 1_000_000) * slot * 1_000_000  # the start of as_of's slot
    minute = slot * 1_000_000

    def at(us: int) -> str:
        return format_rfc3339_us(us)

    docs = [{"type": "outlet.onboarded", "occurred_at": at(AS_OF_US - 400 * day * 1_000_000), "outlet_id": "o1",
             "region": "north", "territory": "T1", "distributor_id": "D1", "channel": "gt", "rep_id": "r1"}]
    # a year of history, then the 30-day edge: closed one slot before as_of, at it, one slot after
    order_times = [AS_OF_US - d * day * 1_000_000 for d in range(400, 40, -9)]
    order_times += [edge_us - 30 * day * 1_000_000 + k * minute for k in (-1, 0, 1, 2)]
    order_times += [edge_us - 7 * day * 1_000_000 + k * minute for k in (0, 1)]
    for n, t in enumerate(order_times):
        docs.append({"type": "order.placed", "occurred_at": at(t), "outlet_id": "o1", "order_id": f"x{n}",
                     "amount": "2.50", "currency": "USD", "lines": 1, "rep_id": "r1" if n % 2 else "r2"})
        docs.append({"type": "visit.completed", "occurred_at": at(t - minute), "outlet_id": "o1",
                     "visit_id": f"v{n}", "rep_id": "r1"})
    # o2's only order opens the oldest slot still in the 30-day window: its interval is open
    docs.append(dict(docs[0], outlet_id="o2"))
    docs.append({"type": "order.placed", "occurred_at": at(edge_us - 30 * day * 1_000_000 + minute),
                 "outlet_id": "o2", "order_id": "y", "amount": "4.00", "currency": "USD", "lines": 1})
    for n, (territory, rep) in enumerate([("T2", "r3"), ("T%3", "r1")]):
        for outlet in ("o1", "o2"):
            docs.append({"type": "outlet.updated", "occurred_at": at(AS_OF_US - (2 - n) * minute), "outlet_id": outlet,
                         "region": "south", "territory": territory, "rep_id": rep})
    messages = [orjson.dumps(dict(doc, event_id=f"m{n}")) for n, doc in enumerate(docs)]

    engine, _report = replay_lines(iter(messages), settings, None)
    for later_slots in (0, 1, 2, 3, 7 * 1440 + 1, 30 * 1440 + 2):
        as_of_us = AS_OF_US + later_slots * minute
        engine.advance(as_of_us)
        actual = {update_key(v): {"value": v.value, "numerator": v.numerator, "denominator": v.denominator}
                  for v in engine.all_values()}
        expected = oracle_kpis(messages, format_rfc3339_us(as_of_us), oracle_settings(settings))
        assert kpi_differences(actual, expected) == [], f"{later_slots} slots after as_of"
    assert expected["active_accounts|30d|territory|T%253"]["value"] == 0  # every order has left by then
