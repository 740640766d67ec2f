"""Property: the field-execution KPIs of spec 10 (plans and call compliance, the outlet universe
and coverage, time in market, order identity, cancellations, returns, retention) equal the
brute-force oracle's, in rolling windows, calendar periods, aliases and lmtd, together with every
KPI they touch (accounts, orders, conversion, productive visits).

Histories are small worlds of a few outlets, reps and order ids, so identities collide: plans
re-planned and cancelled by later (or earlier-stamped) events, visits a minute either side of
local midnight, cancellations before and after their placement and of orders never placed,
placements repeating an order id, returns of cancelled orders, byte-identical duplicates, all in
shuffled arrival order. One test also moves the clock, so that held plan and cancellation events
(ahead of the clock) apply as it reaches them, and periods roll over.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from stream.core.config import ClockSetting, KpiSettings
from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us
from stream.replay import replay_lines
from tests.kpi_compare import kpi_differences, oracle_settings, values_of
from tests.oracle import oracle_kpis

MINUTE = 60 * 1_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# (zone, as_of, local midnights events cluster around, plan dates)
SCENARIOS = [
    ("Asia/Jakarta", "2026-12-01T09:30:30+07:00",
     ["2026-12-01T00:00:00+07:00", "2026-11-30T00:00:00+07:00", "2026-11-01T00:00:00+07:00"],
     ["2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02", "2026-10-31"]),
    ("Europe/Berlin", "2026-10-26T00:10:30+01:00",
     ["2026-10-26T00:00:00+01:00", "2026-10-25T00:00:00+02:00", "2026-10-01T00:00:00+02:00"],
     ["2026-10-24", "2026-10-25", "2026-10-26", "2026-09-30"]),
]
OUTLETS = ["o1", "o2"]
REPS = ["r1", "r2"]
ORDERS = ["x1", "x2", "x3", "x4"]


def us(text: str) -> int:
    value = parse_rfc3339_us(text)
    assert value is not None
    return value


@st.composite
def instants(draw, scenario):
    _zone, as_of, hot, _dates = scenario
    as_of_us = us(as_of)
    if draw(st.integers(0, 3)) == 0:
        return as_of_us - draw(st.integers(0, 40 * DAY // 1_000_000)) * 1_000_000
    centre = us(draw(st.sampled_from(hot)))
    offset = draw(st.one_of(st.sampled_from([0, -1, 1, -60, 60, -61]).map(lambda s: s * 1_000_000),
                            st.integers(-3 * HOUR, 3 * HOUR)))
    return min(centre + offset, as_of_us + 4 * MINUTE)


@st.composite
def event_docs(draw, index, scenario):
    t = draw(instants(scenario))
    base = {"event_id": f"e{index}", "occurred_at": format_rfc3339_us(t)}
    kind = draw(st.sampled_from(["onboarded", "updated", "order", "order", "order", "visit", "visit", "visit",
                                 "plan", "plan", "plan", "cancel", "cancel", "return"]))
    outlet = draw(st.sampled_from(OUTLETS))
    rep = draw(st.sampled_from(REPS))
    if kind in ("onboarded", "updated"):
        return {**base, "type": f"outlet.{kind}", "outlet_id": outlet, "territory": draw(st.sampled_from(["T1", "T2"])),
                "rep_id": rep}
    if kind == "order":
        doc = {**base, "type": "order.placed", "outlet_id": outlet, "order_id": draw(st.sampled_from(ORDERS)),
               "amount": draw(st.sampled_from(["1.005", "10", "0.10"])), "currency": "USD",
               "lines": draw(st.integers(1, 3))}
        if draw(st.booleans()):
            doc["rep_id"] = rep
        if draw(st.booleans()):
            doc["visit_id"] = draw(st.sampled_from(["v1", "v2"]))
        return doc
    if kind == "visit":
        doc = {**base, "type": "visit.completed", "outlet_id": outlet, "visit_id": draw(st.sampled_from(["v1", "v2"])),
               "rep_id": rep}
        if draw(st.integers(0, 2)):
            doc["checked_in_at"] = format_rfc3339_us(t - draw(st.integers(-5, 90)) * MINUTE)
            if draw(st.integers(0, 3)):
                doc["checked_out_at"] = format_rfc3339_us(t)
        return doc
    if kind == "plan":
        doc = {**base, "type": "visit.planned", "outlet_id": outlet, "rep_id": rep,
               "plan_date": draw(st.sampled_from(scenario[3]))}
        status = draw(st.sampled_from([None, None, "planned", "cancelled"]))
        if status is not None:
            doc["status"] = status
        return doc
    if kind == "cancel":
        return {**base, "type": "order.cancelled", "outlet_id": outlet, "order_id": draw(st.sampled_from(ORDERS))}
    doc = {**base, "type": "order.returned", "outlet_id": outlet, "order_id": draw(st.sampled_from(ORDERS)),
           "amount": draw(st.sampled_from(["0.5", "3", "12.25"])), "currency": "USD"}
    if draw(st.booleans()):
        doc["rep_id"] = rep
    return doc


@st.composite
def cases(draw):
    scenario = draw(st.sampled_from(SCENARIOS))
    messages: list[bytes] = []
    for index in range(draw(st.integers(1, 40))):
        if messages and draw(st.integers(0, 9)) == 0:
            messages.append(draw(st.sampled_from(messages)))  # a duplicate
        else:
            messages.append(orjson.dumps(draw(event_docs(index, scenario))))
    messages = draw(st.permutations(messages))
    periods = draw(st.sampled_from([("day", "week", "month"), ("month",), ("day", "quarter")]))
    history = draw(st.integers(0, 2))
    dormancy = draw(st.sampled_from([HOUR, 2 * DAY])) // 1_000_000
    return scenario, list(messages), periods, history, dormancy


def settings_for(zone: str, as_of_us: int, periods, history: int, dormancy: int) -> KpiSettings:
    return KpiSettings(slot_seconds=60, windows_seconds=(3 * 3600, 86400, 7 * 86400),
                       conversion_horizons_seconds=(3600, 3 * 86400), dormancy_seconds=dormancy,
                       clock=ClockSetting("pinned", as_of_us), timezone=zone, periods=periods, period_history=history)






@hsettings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_field_execution_values_equal_the_oracle(case):
    (zone, as_of, _hot, _dates), messages, periods, history, dormancy = case
    settings = settings_for(zone, us(as_of), periods, history, dormancy)
    engine, _report = replay_lines(iter(messages), settings, None)
    expected = oracle_kpis(messages, as_of, oracle_settings(settings))
    assert kpi_differences(values_of(engine), expected) == []


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(), later=st.sampled_from([1, 3, 30, 24 * 60, 3 * 24 * 60 + 7]))
def test_held_plans_and_cancellations_apply_as_the_clock_reaches_them(case, later):
    """Events applied with the clock 3 minutes before as_of (so some are ahead of it, within the
    tolerance, and held), then the clock advanced: every value equals the oracle's at each."""
    (zone, as_of, _hot, _dates), messages, periods, history, dormancy = case
    first_us = us(as_of) - 3 * MINUTE
    settings = settings_for(zone, first_us, periods, history, dormancy)
    kept = [m for m in messages if us(orjson.loads(m)["occurred_at"]) <= first_us + 4 * MINUTE]
    engine, _report = replay_lines(iter(kept), settings, None)
    for as_of_us in (first_us, first_us + 2 * MINUTE, first_us + 3 * MINUTE + later * MINUTE):
        engine.advance(as_of_us)
        expected = oracle_kpis(kept, format_rfc3339_us(as_of_us), oracle_settings(settings))
        assert kpi_differences(values_of(engine), expected) == [], format_rfc3339_us(as_of_us)
