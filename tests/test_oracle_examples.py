"""Hand-worked examples for the oracle (tests/oracle.py), each derived from kpi-spec.md by hand.

These test the oracle itself, not the engine. Every expected number below is worked out in the
comments from the spec text (and the project's decisions where the spec leaves room).

Common ground for all examples unless said otherwise:
  as_of = 2026-11-24T12:00:30Z, slot R = 60 s, so S = the slot that starts at 2026-11-24T12:00:00Z.
  Windows 7d / 30d / 60d = 10080 / 43200 / 86400 slots. "inside W": S - W/R < slot(t) <= S.
  Dormancy D = 30d, horizons 7d / 14d / 30d, base currency USD, future tolerance 5m.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.oracle import OracleSettings, oracle_kpis

AS_OF = "2026-11-24T12:00:30Z"
_BASE = datetime(2026, 11, 24, 12, 0, 30, tzinfo=timezone.utc)
EMPTY = {"value": 0, "numerator": None, "denominator": None}


def ago(**delta) -> str:
    """as_of minus a timedelta, written in UTC with microseconds when there are any."""
    t = _BASE - timedelta(**delta)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"


def enc(doc: dict) -> bytes:
    return json.dumps(doc).encode("utf-8")


def order(eid, outlet, when, amount="10.00", lines=1, currency="USD", **extra) -> bytes:
    return enc({"event_id": eid, "type": "order.placed", "occurred_at": when, "outlet_id": outlet,
                "order_id": "ord-" + eid, "amount": amount, "currency": currency, "lines": lines, **extra})


def outlet(eid, outlet_id, when, kind="outlet.updated", **attrs) -> bytes:
    return enc({"event_id": eid, "type": kind, "occurred_at": when, "outlet_id": outlet_id, **attrs})


def visit(eid, outlet_id, visit_id, rep, when) -> bytes:
    return enc({"event_id": eid, "type": "visit.completed", "occurred_at": when, "outlet_id": outlet_id,
                "visit_id": visit_id, "rep_id": rep})


def lead(eid, kind, lead_id, when, **extra) -> bytes:
    return enc({"event_id": eid, "type": kind, "occurred_at": when, "lead_id": lead_id, **extra})


def activity(eid, rep, kind, when) -> bytes:
    return enc({"event_id": eid, "type": "activity.logged", "occurred_at": when, "rep_id": rep, "kind": kind})


def get(result: dict, key: str) -> dict:
    """A missing key reads as the empty record (as in tests/kpi_compare.py)."""
    return result.get(key, EMPTY)


def value(result: dict, key: str):
    return get(result, key)["value"]


# ---------------------------------------------------------------------------------------------
# 3.1 outlet KPIs
# ---------------------------------------------------------------------------------------------

def test_orders_40_and_2_days_ago_active_dormant_reactivated():
    # Outlet A: orders 40 days and 2 days before as_of. Outlet B: one order 40 days before.
    r = oracle_kpis([
        order("a1", "A", ago(days=40)),
        order("a2", "A", ago(days=2)),
        order("b1", "B", ago(days=40)),
    ], AS_OF)
    # A: the -2d order is inside 7d, 30d and 60d -> active in all three, so never dormant.
    #    Its previous order is 38 days earlier, 38d > D = 30d -> reactivated in all three windows.
    # B: the -40d order is inside 60d only -> active in 60d; it is at or before as_of, so B is
    #    dormant in 7d and 30d. Its only order is its first order -> never reactivated.
    assert [value(r, f"active_accounts|{w}|global|all") for w in ("7d", "30d", "60d")] == [1, 1, 2]
    assert [value(r, f"dormant_accounts|{w}|global|all") for w in ("7d", "30d", "60d")] == [1, 1, 0]
    assert [value(r, f"reactivated_accounts|{w}|global|all") for w in ("7d", "30d", "60d")] == [1, 1, 1]
    # No outlet event: every attribute is "unassigned" (also the assigned rep).
    assert value(r, "active_accounts|60d|territory|unassigned") == 2
    assert value(r, "dormant_accounts|7d|rep|unassigned") == 1
    # Orders: 7d/30d see a2 only, 60d sees all three.
    assert [value(r, f"orders|{w}|global|all") for w in ("7d", "30d", "60d")] == [1, 1, 3]
    assert r["active_accounts|7d|global|all"] == {"value": 1, "numerator": None, "denominator": None}


def test_reactivation_exactly_at_d_is_not_one_and_d_plus_one_microsecond_is():
    r = oracle_kpis([
        outlet("x0", "X", ago(days=90), territory="TX"),
        outlet("y0", "Y", ago(days=90), territory="TY"),
        # X: gap between its orders = exactly 30d = D. "more than D" -> not a reactivation.
        order("x1", "X", ago(days=31)),
        order("x2", "X", ago(days=1)),
        # Y: gap = 30d + 1 microsecond > D -> the -1d order is a reactivation.
        order("y1", "Y", ago(days=31, microseconds=1)),
        order("y2", "Y", ago(days=1)),
    ], AS_OF)
    assert value(r, "reactivated_accounts|7d|territory|TX") == 0
    assert value(r, "reactivated_accounts|7d|territory|TY") == 1
    assert value(r, "reactivated_accounts|7d|global|all") == 1
    # In 60d, x1 and y1 are inside too, but they are first orders (no previous order).
    assert value(r, "reactivated_accounts|60d|global|all") == 1


def test_reactivation_with_two_orders_at_the_same_instant():
    # Z: one order 40 days ago, then two orders at the same instant 1 day ago.
    # Previous order by occurred_at (ties ordered by event_id): z2's previous is z1 (39 days
    # before: > D), z3's previous is z2 (equal times: gap 0). z2 is inside 7d -> reactivated.
    r = oracle_kpis([
        order("z1", "Z", ago(days=40)),
        order("z3", "Z", ago(days=1)),
        order("z2", "Z", ago(days=1)),
    ], AS_OF)
    assert value(r, "reactivated_accounts|7d|global|all") == 1


def test_first_order_conversion_late_onboarding_and_horizon_edges():
    r = oracle_kpis([
        # P: ordered 10 days ago, onboarded (event arriving later) 3 days ago. Its onboarding is
        #    inside 7d/30d/60d -> in every denominator; no order in [b, b + N] -> never converted.
        order("p1", "P", ago(days=10)),
        outlet("p0", "P", ago(days=3), kind="outlet.onboarded"),
        # Q: onboarded 20 days ago, and again 3 days ago (the earliest wins: b = -20d);
        #    outlet.updated 1 day ago does not onboard. Order 6 days ago: t - b = 14d exactly:
        #    converted for N = 14d (<= is inclusive) and 30d, not for 7d.
        outlet("q0", "Q", ago(days=20), kind="outlet.onboarded"),
        outlet("q9", "Q", ago(days=3), kind="outlet.onboarded"),
        outlet("q8", "Q", ago(days=1)),
        order("q1", "Q", ago(days=6)),
        # Q2: onboarded 20 days ago, order at b + 14d + 1us -> converted for 30d only.
        outlet("r0", "Q2", ago(days=20), kind="outlet.onboarded"),
        order("r1", "Q2", ago(days=6, microseconds=-1)),
        # U: never onboarded (outlet.updated only) -> never in a denominator.
        outlet("u0", "U", ago(days=2)),
        order("u1", "U", ago(days=1)),
    ], AS_OF)
    # 7d window: onboarded inside = {P} (Q, Q2 at -20d are outside). P converted for no N.
    for n in ("7d", "14d", "30d"):
        assert get(r, f"first_order_conversion|7d|global|all|{n}") == {"value": 0.0, "numerator": 0, "denominator": 1}
    # 30d window: onboarded inside = {P, Q, Q2}. Converted: 7d: none; 14d: Q; 30d: Q and Q2.
    assert get(r, "first_order_conversion|30d|global|all|7d") == {"value": 0.0, "numerator": 0, "denominator": 3}
    assert get(r, "first_order_conversion|30d|global|all|14d") == {"value": 1 / 3, "numerator": 1, "denominator": 3}
    assert get(r, "first_order_conversion|30d|global|all|30d") == {"value": 2 / 3, "numerator": 2, "denominator": 3}


def test_first_order_conversion_order_in_a_later_slot_does_not_count_yet():
    # F onboarded 1 day ago; its first order is 2 minutes after as_of (slot S + 2, accepted:
    # within the 5-minute tolerance) -> it is within every horizon but not at or before as_of.
    r = oracle_kpis([
        outlet("f0", "F", ago(days=1), kind="outlet.onboarded"),
        order("f1", "F", "2026-11-24T12:02:30Z"),
    ], AS_OF)
    assert get(r, "first_order_conversion|7d|global|all|7d") == {"value": 0.0, "numerator": 0, "denominator": 1}
    # ... and the order counts nowhere: not active, not dormant, no order.
    assert value(r, "active_accounts|60d|global|all") == 0
    assert value(r, "dormant_accounts|60d|global|all") == 0
    assert value(r, "orders|60d|global|all") == 0


def test_window_edges_on_slots():
    # S - 10080 is the slot of 2026-11-17T12:00:00Z .. 12:00:59.999999Z: outside 7d.
    r = oracle_kpis([
        order("e1", "o1", "2026-11-17T12:00:00Z"),         # slot S - 10080: outside
        order("e2", "o2", "2026-11-17T12:00:59.999999Z"),  # still slot S - 10080 (though < 7d before as_of)
        order("e3", "o3", "2026-11-17T19:01:00+07:00"),    # = 12:01:00Z, slot S - 10079: inside
        order("e4", "o4", "2026-11-24T12:00:59.999Z"),     # after as_of but in slot S: inside
        order("e5", "o5", "2026-11-24T12:01:00Z"),         # slot S + 1: counts nowhere
    ], AS_OF)
    assert value(r, "active_accounts|7d|global|all") == 2   # o3, o4
    assert value(r, "orders|7d|global|all") == 2
    # o1, o2 have an order at or before as_of but none inside 7d; o5's order is not at or before.
    assert value(r, "dormant_accounts|7d|global|all") == 2
    assert value(r, "active_accounts|30d|global|all") == 4  # o1..o4
    assert value(r, "dormant_accounts|30d|global|all") == 0


def test_window_labels_are_normalised():
    settings = OracleSettings(windows=("86400s", "90m", "120m"), horizons=("1440m",))
    r = oracle_kpis([order("a", "A", ago(minutes=30)), outlet("b", "A", ago(minutes=30), kind="outlet.onboarded")],
                    AS_OF, settings)
    assert value(r, "orders|1d|global|all") == 1
    assert value(r, "orders|90m|global|all") == 1
    assert value(r, "orders|2h|global|all") == 1
    assert get(r, "first_order_conversion|2h|global|all|1d")["numerator"] == 1


# ---------------------------------------------------------------------------------------------
# Section 2: attributes and scopes
# ---------------------------------------------------------------------------------------------

def test_outlet_attributes_field_by_field_latest():
    r = oracle_kpis([
        outlet("m1", "M", ago(days=5), kind="outlet.onboarded", region="N", territory="T1", rep_id="r1"),
        outlet("m2", "M", ago(days=3), territory="T2", region=None),  # null region keeps N
        outlet("m3", "M", ago(days=10), territory="T9"),              # older: loses to m1/m2
        outlet("u-b", "M", ago(days=2), channel="mt"),                 # same instant as u-a,
        outlet("u-a", "M", ago(days=2), channel="gt"),                 # greater event_id u-b wins
        order("o1", "M", ago(days=1)),                                 # no rep_id -> assigned rep r1
        order("o2", "M", ago(days=1), rep_id="r7"),                    # its own rep
    ], AS_OF)
    # Current attributes: region N, territory T2, channel mt, distributor unassigned, rep r1.
    for scope in ("global|all", "region|N", "territory|T2", "channel|mt", "distributor|unassigned", "rep|r1"):
        assert value(r, f"active_accounts|7d|{scope}") == 1, scope
    for scope in ("territory|T1", "territory|T9", "channel|gt", "rep|r7", "region|unassigned"):
        assert value(r, f"active_accounts|7d|{scope}") == 0, scope
    # Order KPIs: rep = the order's rep_id, else the outlet's assigned rep.
    assert value(r, "orders|7d|rep|r1") == 1
    assert value(r, "orders|7d|rep|r7") == 1
    assert value(r, "orders|7d|territory|T2") == 2


def test_future_event_tolerance_and_attributes_from_a_later_slot():
    r = oracle_kpis([
        outlet("k0", "K", ago(days=1), kind="outlet.onboarded", territory="T0", region="R0"),
        # exactly 5 minutes ahead of as_of: accepted (not "more than" the tolerance); a later
        # slot, but attributes take every accepted event into account -> territory T1.
        outlet("k1", "K", "2026-11-24T12:05:30Z", territory="T1"),
        # 5 minutes + 1 microsecond ahead: rejected (future_event) -> region stays R0.
        outlet("k2", "K", "2026-11-24T12:05:30.000001Z", region="R9"),
        order("k3", "K", ago(days=1)),
        # an accepted order in a later slot counts nowhere, yet it is remembered for dedupe:
        order("fut", "K", "2026-11-24T12:01:00Z"),
        order("fut", "K", ago(hours=1)),  # same event_id as an accepted event: duplicate
    ], AS_OF)
    assert value(r, "orders|7d|territory|T1") == 1
    assert value(r, "orders|7d|territory|T0") == 0
    assert value(r, "orders|7d|region|R0") == 1
    assert value(r, "orders|7d|region|R9") == 0
    assert value(r, "orders|7d|global|all") == 1


def test_pipe_and_percent_in_scope_ids_are_escaped():
    r = oracle_kpis([
        outlet("a0", "A", ago(days=1), territory="T|1%"),
        order("a1", "A", ago(days=1), rep_id="r|x"),
        activity("a2", "a%b", "call", ago(days=1)),
    ], AS_OF)
    assert value(r, "active_accounts|7d|territory|T%7C1%25") == 1
    assert value(r, "orders|7d|rep|r%7Cx") == 1
    assert value(r, "activities|7d|rep|a%25b|call") == 1
    assert not any("T|1" in k or "r|x" in k or "a%b" in k for k in r)


# ---------------------------------------------------------------------------------------------
# 3.2 / 3.3 orders and visits
# ---------------------------------------------------------------------------------------------

def test_amounts_are_exact_decimals_rounded_half_even():
    r = oracle_kpis([
        order("a1", "A", ago(days=1), amount="0.01", lines=1),
        order("a2", "A", ago(days=1), amount="0.02", lines=2),
        order("b1", "B", ago(days=40), amount="0.125", lines=3),
        # a JSON number is taken as the decimal it spells: 1.015 (not the binary double
        # 1.01499999999999990230037...), half-even -> 1.02
        order("c1", "C", ago(days=40), amount=1.015, lines=1, rep_id="rc"),
    ], AS_OF)
    # 7d: orders a1, a2: sum 0.03 -> 0.03; mean 0.015 -> half-even 0.02; lines 3 / 2 = 1.5.
    assert get(r, "sales_amount|7d|global|all") == {"value": 0.03, "numerator": None, "denominator": None}
    assert get(r, "average_order_value|7d|global|all") == {"value": 0.02, "numerator": 0.03, "denominator": 2}
    assert get(r, "lines_per_order|7d|global|all") == {"value": 1.5, "numerator": 3, "denominator": 2}
    # 60d adds 0.125 and 1.015: sum 1.170 -> 1.17; mean 1.17 / 4 = 0.2925 -> 0.29; lines 7 / 4.
    assert get(r, "sales_amount|60d|global|all")["value"] == 1.17
    assert get(r, "average_order_value|60d|global|all") == {"value": 0.29, "numerator": 1.17, "denominator": 4}
    assert get(r, "lines_per_order|60d|global|all") == {"value": 1.75, "numerator": 7, "denominator": 4}
    assert get(r, "sales_amount|60d|rep|rc")["value"] == 1.02
    # 0.125 alone: 12.5 cents, half-even -> 0.12.
    single = oracle_kpis([order("b1", "B", ago(days=1), amount="0.125")], AS_OF)
    assert single["sales_amount|7d|global|all"]["value"] == 0.12
    # No order inside the window: average_order_value is null over 0/0.
    empty = oracle_kpis([order("x", "X", ago(days=40))], AS_OF)
    assert get(empty, "average_order_value|7d|global|all") == {"value": None, "numerator": 0.0, "denominator": 0}
    assert get(empty, "lines_per_order|7d|global|all") == {"value": None, "numerator": 0, "denominator": 0}


def test_visits_and_productive_visits():
    r = oracle_kpis([
        outlet("v0", "V", ago(days=30), territory="TV", rep_id="r9"),
        visit("v1a", "V", "v1", "r1", ago(days=1)),
        visit("v1b", "V", "v1", "r1", ago(days=1, hours=1)),  # same visit_id, another event: counts again
        order("o1", "V", ago(days=3), visit_id="v1"),        # before the visit: still links it
        visit("v2", "V", "v2", "r2", ago(days=1)),
        order("o2", "W", ago(days=1), visit_id="v2"),        # another outlet: does not link V's v2
        visit("v3", "V", "v3", "r2", ago(days=1)),
        order("o3", "V", "2026-11-24T12:01:00Z", visit_id="v3"),  # later slot: not yet
        visit("v4", "V", "v4", "r1", ago(days=8)),            # outside 7d, inside 30d; no order
    ], AS_OF)
    # 7d: visits v1a, v1b, v2, v3 = 4; productive: v1a, v1b = 2; ratio 2/4.
    assert value(r, "visits|7d|global|all") == 4
    assert value(r, "productive_visits|7d|global|all") == 2
    assert get(r, "visit_to_order_ratio|7d|global|all") == {"value": 0.5, "numerator": 2, "denominator": 4}
    # Visit rep scope = the visit's own rep_id (r1: v1a, v1b; r2: v2, v3), not the assigned r9.
    assert get(r, "visit_to_order_ratio|7d|rep|r1") == {"value": 1.0, "numerator": 2, "denominator": 2}
    assert get(r, "visit_to_order_ratio|7d|rep|r2") == {"value": 0.0, "numerator": 0, "denominator": 2}
    assert value(r, "visits|7d|rep|r9") == 0
    assert value(r, "visits|7d|territory|TV") == 4
    # 30d adds v4 (not productive): 2 / 5.
    assert get(r, "visit_to_order_ratio|30d|global|all") == {"value": 0.4, "numerator": 2, "denominator": 5}


# ---------------------------------------------------------------------------------------------
# 3.4 leads
# ---------------------------------------------------------------------------------------------

def test_lead_closed_twice_and_close_ties():
    r = oracle_kpis([
        # L1: lost 5 days ago, then "won" 2 days ago: the earliest close (lost) is the close; the
        # won event is an ignored extra close, its value changes nothing.
        lead("l1c", "lead.created", "L1", ago(days=10), rep_id="r1", value=100),
        lead("l1l", "lead.lost", "L1", ago(days=5)),
        lead("l1w", "lead.won", "L1", ago(days=2), value=999),
        # L2: lost and won at the same instant; the greater event_id (l2z-won) is the close.
        lead("l2a-lost", "lead.lost", "L2", ago(days=3)),
        lead("l2z-won", "lead.won", "L2", ago(days=3)),
        lead("l2c", "lead.created", "L2", ago(days=10), rep_id="r1", value=50),
    ], AS_OF)
    # 7d: closes inside: L1 lost (-5d), L2 won (-3d) -> win rate 1 / 2.
    assert get(r, "win_rate|7d|global|all") == {"value": 0.5, "numerator": 1, "denominator": 2}
    # L2's value: the latest value at or before its close = 50 (from lead.created).
    assert get(r, "avg_deal_size|7d|global|all") == {"value": 50.0, "numerator": 50.0, "denominator": 1}
    # Cycle of L2: won -3d - created -10d = 7 days.
    assert get(r, "avg_sales_cycle_days|7d|rep|r1") == {"value": 7.0, "numerator": 7.0, "denominator": 1}
    assert value(r, "open_leads|-|global|all") == 0
    # Both created 10 days ago: new in 30d, not in 7d.
    assert value(r, "new_leads|7d|global|all") == 0
    assert value(r, "new_leads|30d|global|all") == 2
    # pipeline_velocity = open (0) x 0.5 x 50 / 7 = 0.0 (not null: every part is defined).
    assert get(r, "pipeline_velocity|7d|global|all") == {"value": 0.0, "numerator": None, "denominator": None}


def test_value_after_close_is_ignored_owner_moves_and_velocity():
    r = oracle_kpis([
        # L3: values 100 (-20d), 200 (-8d); won -6d without value; 500 given -1d after the close
        #     is ignored -> value 200. The -1d update also moves the owner to r3 (owner = latest
        #     rep_id whatever its time) -> L3 is r3's.
        lead("l3c", "lead.created", "L3", ago(days=20), rep_id="r1", value=100),
        lead("l3u", "lead.updated", "L3", ago(days=8), rep_id="r2", value=200),
        lead("l3w", "lead.won", "L3", ago(days=6)),
        lead("l3v", "lead.updated", "L3", ago(days=1), rep_id="r3", value=500),
        # L4: won -4d with value 40, and an update at the very same instant with value 70 and a
        #     greater event_id ("l4-x" > "l4-w"): latest by (occurred_at, event_id) -> 70.
        lead("l4-c", "lead.created", "L4", ago(days=20), rep_id="r1", value=10),
        lead("l4-w", "lead.won", "L4", ago(days=4), value=40),
        lead("l4-x", "lead.updated", "L4", ago(days=4), value=70),
        # (an update at that instant with a smaller event_id loses to the close's own value)
        lead("l4-a", "lead.updated", "L4", ago(days=4), value=55),
        # L5: open, created 2.5 days ago.
        lead("l5c", "lead.created", "L5", ago(days=2, hours=12), rep_id="r1"),
        # L6: events but no lead.created: does not count anywhere.
        lead("l6w", "lead.won", "L6", ago(days=1), value=1000),
    ], AS_OF)
    # 7d: won L3 (-6d), L4 (-4d): win rate 2/2; deal size (200 + 70) / 2 = 135;
    #     cycles 14d and 16d -> 30 / 2 = 15 days.
    assert get(r, "win_rate|7d|global|all") == {"value": 1.0, "numerator": 2, "denominator": 2}
    assert get(r, "avg_deal_size|7d|global|all") == {"value": 135.0, "numerator": 270.0, "denominator": 2}
    assert get(r, "avg_sales_cycle_days|7d|global|all") == {"value": 15.0, "numerator": 30.0, "denominator": 2}
    # open: L5 only, age 2.5 days.
    assert value(r, "open_leads|-|global|all") == 1
    assert get(r, "avg_open_lead_age_days|-|global|all") == {"value": 2.5, "numerator": 2.5, "denominator": 1}
    # velocity = 1 x 1.0 x 135 / 15 = 9 per day.
    assert value(r, "pipeline_velocity|7d|global|all") == 9.0
    # Scopes: L3 belongs to r3 now; L4 and L5 to r1; region never given -> unassigned.
    assert get(r, "win_rate|7d|rep|r3") == {"value": 1.0, "numerator": 1, "denominator": 1}
    assert get(r, "avg_deal_size|7d|rep|r3")["value"] == 200.0
    # r2 no longer owns any lead.
    assert get(r, "win_rate|7d|rep|r2")["denominator"] in (0, None)
    assert get(r, "avg_deal_size|7d|rep|r1")["value"] == 70.0
    # r1: open 1 (L5) x win 1/1 x deal 70 / cycle 16 = 4.375, published half-even to cents (spec 13) -> 4.38
    assert value(r, "pipeline_velocity|7d|rep|r1") == 4.38
    # r3 has no open lead: 0 x ... = 0.0
    assert value(r, "pipeline_velocity|7d|rep|r3") == 0.0
    assert value(r, "open_leads|-|region|unassigned") == 1
    # new leads: 7d L5; 30d L3, L4, L5.
    assert value(r, "new_leads|7d|global|all") == 1
    assert value(r, "new_leads|30d|global|all") == 3
    # No close in a window -> win rate, deal size and cycle are null -> velocity null.
    quiet = oracle_kpis([lead("q", "lead.created", "Q", ago(days=1), rep_id="r1", value=5)], AS_OF)
    assert get(quiet, "pipeline_velocity|7d|global|all") == {"value": None, "numerator": None, "denominator": None}
    assert get(quiet, "avg_sales_cycle_days|7d|global|all") == {"value": None, "numerator": 0.0, "denominator": 0}
    # Won with no value anywhere -> deal size null -> velocity null, while the cycle is defined.
    novalue = oracle_kpis([lead("c", "lead.created", "N", ago(days=3), rep_id="r1"),
                           lead("w", "lead.won", "N", ago(days=1)),
                           lead("o", "lead.created", "O", ago(days=1), rep_id="r1")], AS_OF)
    assert get(novalue, "avg_deal_size|7d|global|all") == {"value": None, "numerator": 0.0, "denominator": 0}
    assert value(novalue, "avg_sales_cycle_days|7d|global|all") == 2.0
    assert value(novalue, "pipeline_velocity|7d|global|all") is None
    # Won in the same instant it was created: cycle 0 -> velocity null.
    zero = oracle_kpis([lead("c", "lead.created", "Z", ago(days=3), rep_id="r1", value=10),
                        lead("w", "lead.won", "Z", ago(days=3)),
                        lead("o", "lead.created", "O", ago(days=1), rep_id="r1")], AS_OF)
    assert get(zero, "avg_sales_cycle_days|7d|global|all") == {"value": 0.0, "numerator": 0.0, "denominator": 1}
    assert value(zero, "pipeline_velocity|7d|global|all") is None


def test_lead_open_by_slot_and_region():
    r = oracle_kpis([
        # created in slot S but 20 s after as_of: at or before as_of on slots -> open, age -20 s.
        lead("a", "lead.created", "A", "2026-11-24T12:00:50Z", rep_id="r1", region="north"),
        # created 1 day ago, closed in slot S + 1 (accepted, 30 s ahead): still open at as_of.
        lead("b", "lead.created", "B", ago(days=1), rep_id="r1"),
        lead("b2", "lead.updated", "B", ago(hours=1), region="south"),
        lead("b3", "lead.lost", "B", "2026-11-24T12:01:00Z"),
        # created in slot S + 1: not yet open, not new.
        lead("c", "lead.created", "C", "2026-11-24T12:01:00Z", rep_id="r1"),
    ], AS_OF)
    assert value(r, "open_leads|-|global|all") == 2
    # ages: -20 s and 1 day -> (86400 - 20) s / 2
    assert get(r, "avg_open_lead_age_days|-|global|all") == {
        "value": (86_400_000_000 - 20_000_000) / (2 * 86_400_000_000),
        "numerator": (86_400_000_000 - 20_000_000) / 86_400_000_000, "denominator": 2}
    assert value(r, "open_leads|-|region|north") == 1
    assert value(r, "open_leads|-|region|south") == 1
    assert value(r, "new_leads|7d|global|all") == 2
    assert get(r, "win_rate|7d|global|all")["denominator"] == 0


# ---------------------------------------------------------------------------------------------
# 3.5 activities
# ---------------------------------------------------------------------------------------------

def test_activities_per_kind_and_all():
    r = oracle_kpis([
        activity("a1", "r1", "call", ago(days=1)),
        activity("a2", "r1", "call", ago(days=2)),
        activity("a3", "r2", "demo", ago(days=3)),
        activity("a4", "r1", "email", ago(days=8)),   # 30d only
        activity("a5", "r1", "chat", ago(days=1)),    # unknown kind: rejected
    ], AS_OF)
    assert value(r, "activities|7d|global|all|call") == 2
    assert value(r, "activities|7d|global|all|demo") == 1
    assert value(r, "activities|7d|global|all|all") == 3
    assert value(r, "activities|7d|rep|r1|all") == 2
    assert value(r, "activities|30d|rep|r1|all") == 3
    assert value(r, "activities|30d|rep|r1|email") == 1
    assert value(r, "activities|7d|global|all|meeting") == 0


# ---------------------------------------------------------------------------------------------
# Section 4: rejects and duplicates
# ---------------------------------------------------------------------------------------------

def test_duplicates_first_accepted_copy_wins():
    r = oracle_kpis([
        order("d1", "A", ago(days=1), amount="10.00"),
        order("d1", "A", ago(days=1), amount="99.00"),          # same event_id: ignored
        order("d2", "A", ago(days=1), amount="5.00"),
        order("d2", "A", ago(days=1), amount="5.00"),           # byte-identical repeat: ignored
        order("d3", "A", ago(days=1), amount="1.00", currency="EUR"),  # rejected: not remembered
        order("d3", "A", ago(days=1), amount="1.00"),           # -> this copy is accepted
        activity("d4", "r1", "call", ago(days=1)),
        # same event_id, but another entity (rep r1 vs outlet A): a different event (README
        # "Spec decisions": ids are unique per partition key)
        order("d4", "A", ago(days=1), amount="100.00"),
        order("d4", "A", ago(days=1), amount="100.00"),         # repeat for the same outlet: ignored
    ], AS_OF)
    assert value(r, "orders|7d|global|all") == 4
    assert value(r, "sales_amount|7d|global|all") == 116.0


def test_currency_mismatch_is_rejected():
    r = oracle_kpis([
        order("c1", "A", ago(days=1), currency="EUR"),
        order("c2", "A", ago(days=1), currency="usd"),
        order("c3", "B", ago(days=1), currency="USD"),
    ], AS_OF)
    assert value(r, "orders|7d|global|all") == 1
    assert value(r, "active_accounts|7d|global|all") == 1
    # the rejected orders do not make A known either
    assert "active_accounts|7d|global|all" in r and value(r, "dormant_accounts|7d|global|all") == 0
    # base currency is a setting
    eur = oracle_kpis([order("c1", "A", ago(days=1), currency="EUR")], AS_OF, OracleSettings(base_currency="EUR"))
    assert value(eur, "orders|7d|global|all") == 1


_GOOD = {"event_id": "g", "type": "order.placed", "occurred_at": "2026-11-24T11:00:00Z", "outlet_id": "o",
         "order_id": "x", "amount": "1.00", "currency": "USD", "lines": 1}


@pytest.mark.parametrize("change, accepted", [
    ({}, True),
    ({"lines": True}, False),                # booleans are not numbers
    ({"lines": 0}, False),
    ({"lines": 1.5}, False),
    ({"lines": "2"}, False),
    ({"lines": 2.0}, True),                  # a JSON integer (zero fraction), as JSON Schema reads it
    ({"amount": -1}, False),
    ({"amount": 0}, True),
    ({"amount": "0.5"}, True),
    ({"amount": "1e3"}, False),
    ({"amount": "1."}, False),
    ({"amount": ".5"}, False),
    ({"amount": "-1.00"}, False),
    ({"amount": " 1.00"}, False),
    ({"amount": True}, False),
    ({"amount": None}, False),
    ({"rep_id": ""}, False),                 # optional string present but empty
    ({"rep_id": None}, True),                # optional: null is absent
    ({"visit_id": 7}, False),
    ({"outlet_id": ""}, False),
    ({"order_id": None}, False),
    ({"currency": None}, False),
    ({"event_id": ""}, False),
    ({"event_id": "e" * 128}, True),
    ({"event_id": "e" * 129}, False),
    ({"event_id": 5}, False),
    ({"type": "order.Placed"}, False),
    ({"type": None}, False),
    ({"occurred_at": "2026-02-30T11:00:00Z"}, False),   # no 30 February
    ({"occurred_at": "2026-11-24T24:00:00Z"}, False),
    ({"occurred_at": "2026-11-24T11:00:60Z"}, False),   # leap second: not representable -> rejected
    ({"occurred_at": "2026-11-24T11:00:00"}, False),    # no offset
    ({"occurred_at": "2026-11-24 11:00:00Z"}, False),   # space instead of T
    ({"occurred_at": "2026-11-24T11:00:00+24:00"}, False),
    ({"occurred_at": "2026-11-24T11:00:00.Z"}, False),
    ({"occurred_at": "2026-11-24t11:00:00.123456789z"}, True),  # lower-case t/z, 9 digits
    ({"occurred_at": "2026-11-24T04:00:00-07:00"}, True),
    ({"occurred_at": "２026-11-24T11:00:00Z"}, False),  # non-ASCII digit
    ({"occurred_at": 1764000000}, False),
])
def test_acceptance_rules(change, accepted):
    doc = {**_GOOD, **change}
    r = oracle_kpis([enc(doc)], AS_OF)
    assert value(r, "orders|7d|global|all") == (1 if accepted else 0)


@pytest.mark.parametrize("raw, accepted", [
    (b'{"event_id":"g","type":"order.placed","occurred_at":"2026-11-24T11:00:00Z","outlet_id":"o",'
     b'"order_id":"x","amount":1,"currency":"USD","lines":1}', True),
    (b'{"event_id":"g","type":"order.placed","occurred_at":"2026-11-24T11:00:00Z","outlet_id":"o",'
     b'"order_id":"x","amount":NaN,"currency":"USD","lines":1}', False),      # NaN is not JSON
    (b'{"event_id":"g","type":"order.placed","occurred_at":"2026-11-24T11:00:00Z","outlet_id":"\xff",'
     b'"order_id":"x","amount":1,"currency":"USD","lines":1}', False),        # not UTF-8
    (b'\xef\xbb\xbf{"event_id":"g","type":"order.placed","occurred_at":"2026-11-24T11:00:00Z","outlet_id":"o",'
     b'"order_id":"x","amount":1,"currency":"USD","lines":1}', False),        # UTF-8 BOM: not JSON text
    (b'{"event_id":"g","type":"order.placed","occurred_at":"2026-11-24T11:00:00Z","outlet_id":"\\ud800",'
     b'"order_id":"x","amount":1,"currency":"USD","lines":1}', False),        # lone surrogate: no UTF-8 form
    (b'{"event_id":"g","type":"order.placed","occurred_at":"2026-11-24T11:00:00Z","outlet_id":"\\ud83d\\ude00",'
     b'"order_id":"x","amount":1,"currency":"USD","lines":1}', True),         # escaped surrogate pair: fine
    (b'[{"event_id":"g"}]', False),                                          # not an object
    (b'{"event_id":"g",', False),                                            # malformed
    (b'', False),
])
def test_acceptance_of_raw_bytes(raw, accepted):
    r = oracle_kpis([raw], AS_OF)
    assert value(r, "orders|7d|global|all") == (1 if accepted else 0)


def test_oversized_is_measured_on_the_raw_bytes():
    limit = len(enc({**_GOOD, "note": ""})) + 10
    exactly = enc({**_GOOD, "note": "x" * 10})
    too_big = enc({**_GOOD, "event_id": "h", "note": "x" * 11})
    assert (len(exactly), len(too_big)) == (limit, limit + 1)
    r = oracle_kpis([exactly, too_big], AS_OF, OracleSettings(max_event_bytes=limit))
    assert value(r, "orders|7d|global|all") == 1  # `limit` bytes is not "over" the limit
    assert value(oracle_kpis([too_big], AS_OF), "orders|7d|global|all") == 1  # default 64 KiB


def test_other_types_field_rules():
    r = oracle_kpis([
        visit("v1", "A", "v", "", ago(days=1)),                  # required rep_id empty
        enc({"event_id": "v2", "type": "visit.completed", "occurred_at": ago(days=1), "outlet_id": "A",
             "visit_id": "v", "rep_id": "r", "checked_in_at": "yesterday"}),  # bad optional time
        enc({"event_id": "v3", "type": "visit.completed", "occurred_at": ago(days=1), "outlet_id": "A",
             "visit_id": "v", "rep_id": "r", "checked_in_at": ago(days=1, hours=1), "extra": [1]}),  # ok
        lead("l1", "lead.created", "L", ago(days=1), rep_id="r", value="12.5"),  # lead value: number only
        lead("l2", "lead.created", "L", ago(days=1), rep_id="r", value=-1),
        lead("l3", "lead.created", "L", ago(days=1)),                             # rep_id required
        lead("l4", "lead.created", "M", ago(days=1), rep_id="r", value=None),     # ok
        lead("l5", "lead.lost", "M", ago(days=1), reason=""),                     # empty optional
    ], AS_OF)
    assert value(r, "visits|7d|global|all") == 1
    assert value(r, "new_leads|7d|global|all") == 1
    assert value(r, "open_leads|-|global|all") == 1  # l5 rejected, so M is still open


def test_json_schema_files_are_applied_when_present(tmp_path, monkeypatch):
    # A stand-in schema (the real ones live in schemas/): order_id at most 3 characters, lines an
    # integer, with a $ref to a sibling file.
    import tests.oracle as oracle

    (tmp_path / "common.v1.json").write_text(json.dumps(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.test/s/common.v1.json",
         "$defs": {"short": {"type": "string", "minLength": 1, "maxLength": 3}}}))
    (tmp_path / "order.placed.v1.json").write_text(json.dumps(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.test/s/order.placed.v1.json",
         "type": "object", "required": ["order_id", "lines"],
         "properties": {"order_id": {"$ref": "common.v1.json#/$defs/short"}, "lines": {"type": "integer", "minimum": 1}}}))
    monkeypatch.setattr(oracle, "SCHEMA_DIR", tmp_path)
    monkeypatch.setattr(oracle, "_schema_cache", {})
    r = oracle_kpis([
        enc({**_GOOD, "event_id": "a", "order_id": "abc"}),
        enc({**_GOOD, "event_id": "b", "order_id": "abcd"}),       # schema: too long -> rejected
        enc({**_GOOD, "event_id": "c", "order_id": "x", "lines": 2.0}),  # 2.0 is a JSON integer
        activity("d", "r1", "call", ago(days=1)),                  # no schema file for this type
    ], AS_OF)
    assert value(r, "orders|7d|global|all") == 2
    assert value(r, "activities|7d|global|all|all") == 1


# ---------------------------------------------------------------------------------------------
# Speed: ~30k events for one as_of in well under a minute.
# ---------------------------------------------------------------------------------------------

def test_thirty_thousand_events_in_reasonable_time():
    rnd = random.Random(7)
    messages = []
    for i in range(30_000):
        when = ago(seconds=rnd.randrange(0, 70 * 86400))
        roll = rnd.random()
        o = f"o{rnd.randrange(3000)}"
        if roll < 0.45:
            messages.append(order(f"e{i}", o, when, amount=str(rnd.randrange(1, 100000) / 100),
                                  lines=rnd.randrange(1, 9), rep_id=f"r{rnd.randrange(50)}",
                                  visit_id=f"v{rnd.randrange(5000)}"))
        elif roll < 0.65:
            messages.append(visit(f"e{i}", o, f"v{rnd.randrange(5000)}", f"r{rnd.randrange(50)}", when))
        elif roll < 0.75:
            messages.append(outlet(f"e{i}", o, when, kind=rnd.choice(["outlet.onboarded", "outlet.updated"]),
                                   territory=f"T{rnd.randrange(40)}", region=f"R{rnd.randrange(5)}",
                                   rep_id=f"r{rnd.randrange(50)}"))
        elif roll < 0.9:
            kind = rnd.choice(["lead.created", "lead.updated", "lead.won", "lead.lost"])
            messages.append(lead(f"e{i}", kind, f"L{rnd.randrange(2000)}", when, rep_id=f"r{rnd.randrange(50)}"))
        else:
            messages.append(activity(f"e{i}", f"r{rnd.randrange(50)}", rnd.choice(["call", "demo"]), when))
    start = time.monotonic()
    r = oracle_kpis(messages, AS_OF)
    elapsed = time.monotonic() - start
    assert r["orders|60d|global|all"]["value"] > 10_000
    assert elapsed < 60, elapsed
