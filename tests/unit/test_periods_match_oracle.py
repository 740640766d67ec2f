"""Property: calendar period values (spec 8) equal the brute-force oracle's, on random histories
that straddle local midnights, ISO week 53, month, quarter and year ends, and DST changes.

Events cluster around the period boundaries near `as_of` (and around lmtd's cutoff m), arrive in
any order -- so most are late events into periods already closed -- with byte-identical
duplicates, outlets moving territory and rep, and leads closing twice. One test also moves the
clock across a boundary after the events (aliases move, old periods leave the published set).
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from stream.core.config import ClockSetting, KpiSettings, format_duration
from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us
from stream.replay import replay_lines
from tests.kpi_compare import kpi_differences, oracle_settings, values_of
from tests.oracle import local_date_of, oracle_kpis, period_before, period_of, period_start_us
from zoneinfo import ZoneInfo

MINUTE = 60 * 1_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def us(text: str) -> int:
    value = parse_rfc3339_us(text)
    assert value is not None
    return value


# (zone, as_of, instants events cluster around: local midnights of period starts, DST changes, m)
SCENARIOS = [
    # Monday 2027-01-04 starts 2027-W01; 2026-W53 ran 2026-12-28..2027-01-03; Q1/2027 began on the 1st
    ("Asia/Jakarta", "2027-01-04T00:00:30+07:00",
     ["2027-01-04T00:00:00+07:00", "2027-01-01T00:00:00+07:00", "2026-12-28T00:00:00+07:00",
      "2026-12-01T00:00:00+07:00", "2026-12-04T00:00:00+07:00", "2026-10-01T00:00:00+07:00"]),
    # on 30 March LMTD is all of February
    ("Asia/Jakarta", "2027-03-30T10:00:30+07:00",
     ["2027-03-30T00:00:00+07:00", "2027-03-01T00:00:00+07:00", "2027-02-28T23:58:00+07:00",
      "2027-02-01T00:00:00+07:00", "2027-03-29T00:00:00+07:00", "2027-01-01T00:00:00+07:00"]),
    # Europe/Berlin: DST ended 2026-10-25 (a 25-hour day); as_of just after the month turned
    ("Europe/Berlin", "2026-11-01T00:00:30+01:00",
     ["2026-11-01T00:00:00+01:00", "2026-10-25T00:00:00+02:00", "2026-10-25T02:30:00+01:00",
      "2026-10-01T00:00:00+02:00", "2026-10-26T00:00:00+01:00"]),
    # Berlin mid-March, DST starts 2026-03-29; lmtd cut off in February
    ("Europe/Berlin", "2026-03-29T12:00:30+02:00",
     ["2026-03-29T00:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-01T00:00:00+01:00",
      "2026-02-28T12:00:00+01:00", "2026-03-23T00:00:00+01:00"]),
    # America/Sao_Paulo, historic DST: 2018-11-04 had no midnight (00:00 -> 01:00)
    ("America/Sao_Paulo", "2018-11-05T00:01:30-02:00",
     ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00", "2018-11-01T00:00:00-03:00",
      "2018-10-01T00:00:00-03:00", "2018-10-05T00:00:00-03:00"]),
]

OUTLETS = ["o1", "o2", "o|3"]
REPS = ["r1", "r2"]
TERRITORIES = ["T1", "T%2"]
LEADS = ["L1", "L2", "L3"]
VISITS = ["v1", "v2"]


def lmtd_cutoff_us(zone: str, as_of_us: int) -> int:
    """m of spec 8, by the oracle's calendar."""
    z = ZoneInfo(zone)
    p0 = period_of("month", local_date_of(as_of_us, z))
    p1 = period_before(p0)
    return period_start_us(p1, z) + (as_of_us - period_start_us(p0, z))


@st.composite
def instants(draw, scenario):
    zone, as_of, hot = scenario
    as_of_us = us(as_of)
    if draw(st.integers(0, 4)) == 0:  # anywhere in the last ~100 days
        return as_of_us - draw(st.integers(0, 100 * DAY // 1_000_000)) * 1_000_000
    centres = [us(text) for text in hot] + [lmtd_cutoff_us(zone, as_of_us), lmtd_cutoff_us(zone, as_of_us - 10 * MINUTE)]
    centre = draw(st.sampled_from(centres))
    offset = draw(st.one_of(st.sampled_from([0, -1, 1, -59, -60, 60, 61, -61]).map(lambda s: s * 1_000_000),
                            st.integers(-180, 180).map(lambda s: s * 1_000_000),
                            st.integers(-3 * HOUR, 3 * HOUR)))
    return min(centre + offset, as_of_us + 4 * MINUTE)


@st.composite
def event_docs(draw, index, scenario):
    t = draw(instants(scenario))
    base = {"event_id": f"e{index}", "occurred_at": format_rfc3339_us(t)}
    kind = draw(st.sampled_from(["onboarded", "updated", "order", "order", "order", "visit", "visit",
                                 "lead.created", "lead.updated", "lead.won", "lead.lost", "activity"]))
    outlet = draw(st.sampled_from(OUTLETS))
    if kind in ("onboarded", "updated"):
        return {**base, "type": f"outlet.{kind}", "outlet_id": outlet, "region": draw(st.sampled_from(["n", "s"])),
                "territory": draw(st.sampled_from(TERRITORIES)), "rep_id": draw(st.sampled_from(REPS))}
    if kind == "order":
        doc = {**base, "type": "order.placed", "outlet_id": outlet, "order_id": f"x{index}",
               "amount": draw(st.sampled_from(["1.005", "10", "0.10", "7.875"])), "currency": "USD",
               "lines": draw(st.integers(1, 4))}
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
        return {**base, "type": kind, "lead_id": lead, "rep_id": draw(st.sampled_from(REPS)),
                "value": draw(st.sampled_from([None, 5, 12.5]))}
    if kind == "lead.updated":
        return {**base, "type": kind, "lead_id": lead, "rep_id": draw(st.sampled_from(REPS)), "value": 3}
    if kind in ("lead.won", "lead.lost"):
        return {**base, "type": kind, "lead_id": lead}
    return {**base, "type": "activity.logged", "rep_id": draw(st.sampled_from(REPS)),
            "kind": draw(st.sampled_from(["call", "email", "meeting", "demo"]))}


@st.composite
def cases(draw):
    scenario = draw(st.sampled_from(SCENARIOS))
    messages: list[bytes] = []
    for index in range(draw(st.integers(1, 40))):
        if messages and draw(st.integers(0, 9)) == 0:
            messages.append(draw(st.sampled_from(messages)))  # a duplicate
        else:
            messages.append(orjson.dumps(draw(event_docs(index, scenario))))
    messages = draw(st.permutations(messages))  # arrival order: late events into closed periods
    periods = draw(st.sampled_from([("day", "week", "month", "quarter"), ("day", "week", "month", "quarter", "year"),
                                    ("month",), ("week", "year")]))
    history = draw(st.integers(0, 2))
    dormancy = draw(st.sampled_from([HOUR, 2 * DAY])) // 1_000_000
    return scenario, list(messages), periods, history, dormancy


def settings_for(zone: str, as_of_us: int, periods, history: int, dormancy: int) -> KpiSettings:
    return KpiSettings(slot_seconds=60, windows_seconds=(86400,), conversion_horizons_seconds=(3600, 3 * 86400),
                       dormancy_seconds=dormancy, clock=ClockSetting("pinned", as_of_us), timezone=zone,
                       periods=periods, period_history=history)






def period_keys(expected: dict, settings: KpiSettings) -> int:
    rolling = {format_duration(w) for w in settings.windows_seconds}
    return sum(1 for key, value in expected.items() if key.split("|")[1] not in rolling | {"-"} and value["value"])


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_period_values_equal_the_oracle(case):
    (zone, as_of, _hot), messages, periods, history, dormancy = case
    settings = settings_for(zone, us(as_of), periods, history, dormancy)
    engine, _report = replay_lines(iter(messages), settings, None)
    expected = oracle_kpis(messages, as_of, oracle_settings(settings))
    assert kpi_differences(values_of(engine), expected) == []


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(), later=st.sampled_from([1, 2, 30, 24 * 60, 3 * 24 * 60 + 7, 40 * 24 * 60]))
def test_period_values_follow_the_clock_across_boundaries(case, later):
    """Events applied at as_of - 10 minutes, then the clock advanced past local midnight (and,
    for the longer moves, past week and month ends): every value equals the oracle's at each."""
    (zone, as_of, _hot), messages, periods, history, dormancy = case
    first_us = us(as_of) - 10 * MINUTE
    settings = settings_for(zone, first_us, periods, history, dormancy)
    # the oracle judges future events against its own as_of: keep the events both accept
    kept = [m for m in messages if us(orjson.loads(m)["occurred_at"]) <= first_us + 4 * MINUTE]
    engine, _report = replay_lines(iter(kept), settings, None)
    for as_of_us in (first_us, first_us + 10 * MINUTE + later * MINUTE):
        engine.advance(as_of_us)
        expected = oracle_kpis(kept, format_rfc3339_us(as_of_us), oracle_settings(settings))
        assert kpi_differences(values_of(engine), expected) == [], format_rfc3339_us(as_of_us)


def test_lmtd_on_30_march_is_all_of_february_and_mtd_falls_at_local_midnight():
    """Spec 8's examples, written out: an order on 28 February counts in lmtd on 30 March; mtd
    of April is 0 from local midnight of the 1st, and `2027-03` keeps March's value."""
    zone = "Asia/Jakarta"
    docs = [
        {"type": "order.placed", "occurred_at": "2027-02-28T23:59:00+07:00", "outlet_id": "o1", "order_id": "a"},
        {"type": "order.placed", "occurred_at": "2027-03-31T23:59:00+07:00", "outlet_id": "o1", "order_id": "b"},
    ]
    messages = [orjson.dumps({**doc, "event_id": f"e{n}", "amount": "2.50", "currency": "USD", "lines": 1})
                for n, doc in enumerate(docs)]
    as_of_us = us("2027-03-30T10:00:00+07:00")
    settings = settings_for(zone, us("2027-04-01T00:00:00+07:00"), ("month",), 1, 86400)
    engine, _ = replay_lines(iter(messages), settings, None)
    engine = type(engine)(settings, as_of_us)
    for raw in messages:
        from stream.core.decode import decode_event
        engine.apply(decode_event(raw, us("2027-04-01T00:00:00+07:00"), settings))
    values = values_of(engine)
    assert values["orders|lmtd|global|all"]["value"] == 1
    assert values["orders|mtd|global|all"]["value"] == 0  # the 31 March order is not yet at or before as_of
    engine.advance(us("2027-03-31T23:59:59+07:00"))
    assert values_of(engine)["orders|mtd|global|all"]["value"] == 1
    engine.advance(us("2027-04-01T00:00:00+07:00"))
    values = values_of(engine)
    assert values["orders|mtd|global|all"]["value"] == 0
    assert values["orders|2027-03|global|all"]["value"] == 1
    assert values["orders|lmtd|global|all"]["value"] == 0  # m = 1 March 00:00: no March order yet
    assert "dormant_accounts|mtd|global|all" not in values


def test_an_order_exactly_at_local_midnight_of_the_first_belongs_to_the_new_month_and_counts_at_that_instant():
    """Spec 8: a period is [start, end); at as_of exactly on a boundary the new period is current."""
    zone = "Asia/Jakarta"
    boundary = "2026-12-01T00:00:00+07:00"
    docs = [{"type": "order.placed", "occurred_at": boundary, "outlet_id": "o1", "order_id": "a"},
            {"type": "order.placed", "occurred_at": "2026-11-30T23:59:59.999999+07:00", "outlet_id": "o2",
             "order_id": "b"}]
    messages = [orjson.dumps({**doc, "event_id": f"e{n}", "amount": "1.00", "currency": "USD", "lines": 1})
                for n, doc in enumerate(docs)]
    settings = settings_for(zone, us(boundary), ("day", "month"), 1, 86400)
    engine, _ = replay_lines(iter(messages), settings, None)
    values = values_of(engine)
    assert values["orders|mtd|global|all"]["value"] == 1  # December's, holding the midnight order
    assert values["orders|2026-12|global|all"]["value"] == 1
    assert values["orders|2026-11|global|all"]["value"] == 1  # the last microsecond of November
    assert values["orders|today|global|all"]["value"] == 1
    assert values["orders|2026-11-30|global|all"]["value"] == 1
    assert kpi_differences(values, oracle_kpis(messages, boundary, oracle_settings(settings))) == []
