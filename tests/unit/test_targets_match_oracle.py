"""Property: targets, attainment and projections (spec 9) equal the brute-force oracle's.

Random `target.set` events for the periods around `as_of` (the current one, closed ones within
and beyond the history, the next one), re-set, removed with null, set to 0, tied on occurred_at,
some set in a slot after the clock's, mixed with the period tests' traffic (late events into
closed periods, duplicates, moving outlets), in any arrival order; then the clock moved across
boundaries (aliases move, pending sets become the target, old periods' targets stop).
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from stream.core.decode import Rejected, decode_event
from stream.core.timeparse import format_rfc3339_us
from stream.replay import replay_lines
from tests.kpi_compare import kpi_differences
from tests.oracle import local_date_of, oracle_kpis, period_after, period_before, period_name, period_of
from tests.unit.test_periods_match_oracle import (MINUTE, REPS, TERRITORIES, cases, oracle_settings, settings_for, us,
                                                  values_of)

KPIS = ["active_accounts", "reactivated_accounts", "orders", "sales_amount", "visits", "productive_visits",
        "new_leads", "activities", "net_sales_amount", "new_outlets", "visited_outlets", "calls_on_plan"]
SCOPES = [("global", "all"), ("territory", TERRITORIES[0]), ("territory", TERRITORIES[1]), ("rep", REPS[0]),
          ("region", "n"), ("channel", "unassigned"), ("rep", "nobody")]


def designators_near(zone: str, as_of_us: int, kinds) -> list[str]:
    """Per configured kind: the current period, three before it and the next one."""
    today = local_date_of(as_of_us, ZoneInfo(zone))
    out = []
    for kind in kinds:
        period = period_of(kind, today)
        out.append(period_name(period_after(period)))
        for _ in range(4):
            out.append(period_name(period))
            period = period_before(period)
    return out


@st.composite
def target_docs(draw, index: int, zone: str, as_of_us: int, kinds):
    kpi = draw(st.sampled_from(KPIS))
    scope, scope_id = draw(st.sampled_from(SCOPES))
    doc = {"event_id": f"t{draw(st.integers(0, 30))}", "type": "target.set", "kpi": kpi,
           "period": draw(st.sampled_from(designators_near(zone, as_of_us, kinds))), "scope": scope,
           "scope_id": scope_id,
           "value": draw(st.sampled_from([None, 0, 1, 3, "2.5", "1000.005", 7.25, "0.10"])),
           "occurred_at": format_rfc3339_us(as_of_us - draw(st.sampled_from([0, 30, 61, 3600, 86400 * 40]) )
                                            * 1_000_000 + draw(st.sampled_from([0, 0, 2 * MINUTE, 4 * MINUTE])))}
    if kpi == "activities" and draw(st.booleans()):
        doc["kind"] = draw(st.sampled_from(["call", "demo", "all"]))
    return doc


@st.composite
def target_cases(draw):
    case = draw(cases())
    (zone, as_of, _hot), messages, periods, history, dormancy = case
    as_of_us = us(as_of)
    targets = [orjson.dumps(draw(target_docs(n, zone, as_of_us, periods))) for n in range(draw(st.integers(1, 25)))]
    mixed = draw(st.permutations(messages + targets))
    return (zone, as_of, periods, history, dormancy), list(mixed)


def targets_only(values: dict) -> dict:
    return {key: value for key, value in values.items() if key.split("|")[0].endswith(
        ("_target", "_attainment", "_projected"))}


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=target_cases())
def test_targets_attainment_and_projections_equal_the_oracle(case):
    (zone, as_of, periods, history, dormancy), messages = case
    settings = settings_for(zone, us(as_of), periods, history, dormancy)
    engine, _report = replay_lines(iter(messages), settings, None)
    expected = oracle_kpis(messages, as_of, oracle_settings(settings))
    assert kpi_differences(values_of(engine), expected) == []


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=target_cases(), later=st.sampled_from([1, 3, 24 * 60, 3 * 24 * 60 + 7, 40 * 24 * 60]))
def test_targets_follow_the_clock_across_boundaries(case, later):
    (zone, as_of, periods, history, dormancy), messages = case
    first_us = us(as_of)
    settings = settings_for(zone, first_us, periods, history, dormancy)
    engine, _report = replay_lines(iter(messages), settings, None)
    for as_of_us in (first_us, first_us + later * MINUTE):
        engine.advance(as_of_us)
        # the oracle judges future events against its own as_of: the engine judged them at first_us
        kept = [m for m in messages if _accepted_at(m, first_us, settings)]
        expected = oracle_kpis(kept, format_rfc3339_us(as_of_us), oracle_settings(settings))
        assert kpi_differences(targets_only(values_of(engine)), targets_only(expected)) == [], format_rfc3339_us(as_of_us)


def _accepted_at(raw: bytes, reference_us: int, settings) -> bool:
    try:
        decode_event(raw, reference_us, settings)
        return True
    except Rejected:
        return False


def test_a_removed_target_publishes_its_keys_as_null_and_a_zero_target_has_no_attainment():
    as_of = "2026-11-20T10:00:00+07:00"
    settings = settings_for("Asia/Jakarta", us(as_of), ("month",), 1, 3600)
    base = {"type": "target.set", "period": "2026-11", "scope": "global", "scope_id": "all"}
    messages = [orjson.dumps({**base, "event_id": "a", "kpi": "orders", "value": 5,
                              "occurred_at": "2026-11-01T00:00:00+07:00"}),
                orjson.dumps({**base, "event_id": "b", "kpi": "orders", "value": None,
                              "occurred_at": "2026-11-02T00:00:00+07:00"}),
                orjson.dumps({**base, "event_id": "c", "kpi": "visits", "value": 0,
                              "occurred_at": "2026-11-02T00:00:00+07:00"})]
    engine, _ = replay_lines(iter(messages), settings, None)
    values = values_of(engine)
    for suffix in ("_target", "_attainment", "_projected", "_projected_attainment"):
        assert values[f"orders{suffix}|mtd|global|all"]["value"] is None
    assert values["visits_target|mtd|global|all"]["value"] == 0
    assert values["visits_attainment|mtd|global|all"]["value"] is None
    assert values["visits_projected_attainment|mtd|global|all"]["value"] is None
    assert kpi_differences(values, oracle_kpis(messages, as_of, oracle_settings(settings))) == []


def test_an_alias_that_moves_to_a_period_without_a_target_publishes_the_target_keys_as_null():
    """November had a target, December has none: at local midnight `mtd` names December, so the
    target keys `mtd` published in November fall to null (spec 13) while `2026-11` keeps them."""
    settings = settings_for("Asia/Jakarta", us("2026-11-30T23:50:00+07:00"), ("month",), 1, 3600)
    messages = [orjson.dumps({"event_id": "a", "type": "target.set", "occurred_at": "2026-11-01T00:00:00+07:00",
                              "kpi": "orders", "period": "2026-11", "scope": "global", "scope_id": "all", "value": 4})]
    engine, _ = replay_lines(iter(messages), settings, None)
    assert values_of(engine)["orders_target|mtd|global|all"]["value"] == 4
    engine.advance(us("2026-12-01T00:00:00+07:00"))
    values = values_of(engine)
    assert values["orders_target|2026-11|global|all"]["value"] == 4
    for suffix in ("_target", "_attainment", "_projected", "_projected_attainment"):
        assert values[f"orders{suffix}|mtd|global|all"]["value"] is None
