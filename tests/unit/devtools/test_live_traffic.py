"""Live traffic (stream/devtools/live_traffic.py), what the demo sends: a recent history ending at a passed-in
`now`, then traffic after it on a working-day rhythm, lazily, with the bad messages still bad."""

from __future__ import annotations

import itertools
import math
import tracemalloc
from collections import Counter

import orjson

from stream.core.config import KpiSettings
from stream.core.decode import REJECT_REASONS, Rejected, decode_event
from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us
from stream.devtools import live_traffic
from tests.oracle import OracleSettings, oracle_kpis

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
NOW = parse_rfc3339_us("2027-03-10T09:30:00Z")  # a Wednesday morning
CONFIG = live_traffic.LiveConfig(seed=3, history_events=8_000, outlets=500, reps=20, rate=40.0)
TAKE = 12_000
STREAM = list(itertools.islice(live_traffic.live(CONFIG, NOW), TAKE))
HISTORY = [timed for timed in STREAM if timed.due_us <= NOW]


def _occurred(message) -> int | None:
    try:
        return parse_rfc3339_us(orjson.loads(message.value)["occurred_at"])
    except Exception:  # noqa: BLE001 - the malformed ones
        return None


def _event_ids(stream) -> set[str]:
    ids = set()
    for timed in stream:
        try:
            ids.add(orjson.loads(timed.message.value)["event_id"])
        except Exception:  # noqa: BLE001 - the malformed ones
            pass
    return ids


def _deliberately_bad(value: bytes) -> bool:
    """The generator's bad messages: the ORD-BAD orders, garbage, and the order without its id."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return True
    if not isinstance(doc, dict):
        return True
    return "ORD-BAD" in str(doc.get("order_id")) or (doc.get("type") == "order.placed" and "order_id" not in doc)


def _decode(timed):
    try:
        return decode_event(timed.message.value, max(timed.due_us, NOW), KpiSettings())
    except Rejected as rejected:
        return rejected


def test_a_history_ending_at_now_then_live_traffic_due_at_its_own_instants():
    plans = [timed for timed in HISTORY if b'"visit.planned"' in timed.message.value]
    # the weekly beat plans come on top of the drawn traffic `history_events` sizes
    assert 0.85 * CONFIG.history_events <= len(HISTORY) - len(plans) <= 1.15 * CONFIG.history_events
    expected_plans = live_traffic.plan_events(CONFIG, live_traffic.calls_per_day(CONFIG))
    assert 0.7 * expected_plans <= len(plans) <= 1.3 * expected_plans, (len(plans), expected_plans)
    dues = [timed.due_us for timed in STREAM]
    assert dues == sorted(dues)
    live = STREAM[len(HISTORY):]
    assert live and all(timed.due_us > NOW for timed in live)
    on_time = late = 0
    for timed in STREAM:
        event = _decode(timed)
        if isinstance(event, Rejected):
            continue
        # valid events are never ahead of when they are sent
        assert event.occurred_us <= max(timed.due_us, NOW)
        if event.type != "outlet.onboarded":
            assert event.occurred_us >= NOW - CONFIG.history_days * DAY_US - 6 * DAY_US
        if timed.due_us > NOW:
            if event.occurred_us == timed.due_us:
                on_time += 1
            else:
                late += 1
    assert on_time > 10 * late > 0
    # the history reaches up to now: the last day has traffic
    assert sum(1 for timed in HISTORY if timed.due_us > NOW - DAY_US) > 50


def test_same_seed_and_now_give_the_same_messages_another_now_shifts_them():
    again = list(itertools.islice(live_traffic.live(CONFIG, NOW), 2_000))
    assert again == STREAM[:2_000]
    later = list(itertools.islice(live_traffic.live(CONFIG, NOW + DAY_US), 2_000))
    # the traffic drawn starts a day later (the weekly beat plans keep to the calendar's Mondays,
    # so the random streams part from the first plan round on)
    def first_drawn(stream):
        fixed = (b'"outlet.onboarded"', b'"target.set"', b'"visit.planned"')
        return next(t for t in stream if not any(kind in t.message.value for kind in fixed))

    assert first_drawn(later).due_us - first_drawn(STREAM).due_us > 20 * HOUR_US
    assert later[-1] != STREAM[1_999]
    assert not _event_ids(later) & _event_ids(STREAM)


def test_bad_messages_stay_bad_at_the_instant_they_are_sent():
    reasons = Counter()
    for timed in STREAM:
        event = _decode(timed)
        # rejected exactly when deliberately bad
        assert isinstance(event, Rejected) == _deliberately_bad(timed.message.value), timed
        if isinstance(event, Rejected):
            reasons[event.reason] += 1
            if event.reason == "future_event":
                # really ahead of the wall clock when sent, by more than the tolerance
                assert _occurred(timed.message) > max(timed.due_us, NOW) + 30 * 60_000_000
    assert set(reasons) == set(REJECT_REASONS)


def test_byte_identical_resends_are_mixed_in():
    counts = Counter(timed.message.value for timed in STREAM)
    repeats = sum(n - 1 for n in counts.values())
    assert 0.005 * TAKE <= repeats <= 0.04 * TAKE


def test_every_kpi_family_has_values_at_now_from_the_history_alone():
    values = oracle_kpis([t.message.value for t in HISTORY], format_rfc3339_us(NOW), OracleSettings())

    def value(key):
        return (values.get(key) or {}).get("value")

    for kpi in ("active_accounts", "dormant_accounts", "reactivated_accounts", "orders", "sales_amount",
                "average_order_value", "lines_per_order", "visits", "productive_visits", "visit_to_order_ratio",
                "new_leads", "win_rate", "avg_deal_size", "avg_sales_cycle_days", "pipeline_velocity"):
        for window in ("7d", "30d"):
            assert value(f"{kpi}|{window}|global|all") not in (None, 0, "0"), (kpi, window)
    assert value("first_order_conversion|30d|global|all|14d") not in (None, 0, "0")
    assert value("open_leads|-|global|all") not in (None, 0, "0")
    assert value("activities|7d|global|all|all") not in (None, 0, "0")
    # and it is a recent history: 7-day values are a fair share of the 30-day ones
    assert float(value("orders|7d|global|all")) > 0.15 * float(value("orders|30d|global|all"))


def test_the_live_rate_follows_a_working_day():
    def first_hour(now_us: int) -> int:
        config = live_traffic.LiveConfig(seed=4, history_events=0, rate=20.0)
        count = 0
        for timed in live_traffic.live(config, now_us):
            if timed.due_us > now_us + HOUR_US:
                return count
            count += 1

    weekday_morning = first_hour(parse_rfc3339_us("2027-03-10T09:00:00Z"))
    sunday_night = first_hour(parse_rfc3339_us("2027-03-14T02:00:00Z"))
    assert 0.8 * 20 * 3600 < weekday_morning < 1.2 * 20 * 3600
    assert 0 < sunday_night < weekday_morning / 8


def test_it_is_an_iterator_whose_memory_does_not_grow_with_the_count():
    config = live_traffic.LiveConfig(seed=5, history_events=0, rate=50.0, max_pending=300)
    stream = live_traffic.live(config, NOW)
    assert iter(stream) is stream and not isinstance(stream, (list, tuple))
    tracemalloc.start()
    try:
        for _ in itertools.islice(stream, 5_000):
            pass
        after_few = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in itertools.islice(stream, 40_000):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 40,000 more messages held would be > 12 MB; streamed, the peak barely moves
    assert peak < after_few + 3_000_000, (after_few, peak)


def test_events_stops_the_stream():
    config = live_traffic.LiveConfig(seed=6, history_events=500, events=700)
    assert sum(1 for _ in live_traffic.live(config, NOW)) == 700


def _docs(stream):
    for timed in stream:
        try:
            doc = orjson.loads(timed.message.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            yield timed, doc


def test_field_execution_events_as_the_generators_world_has_them():
    """Spec 10 traffic: weekly beat plans (some cancelled, some re-planned), visits with check-in and
    check-out, cancelled orders, order ids placed twice, returns -- in the history and live."""
    types = Counter()
    plans: dict[tuple[str, str, str], list[dict]] = {}
    placements = Counter()
    for timed, doc in _docs(STREAM):
        types[doc.get("type")] += 1
        if doc.get("type") == "visit.planned":
            plans.setdefault((doc["outlet_id"], doc["rep_id"], doc["plan_date"]), []).append(doc)
            # made in the week of its plan date (local Monday 00:00 to the plan date's end, UTC+7)
            made = parse_rfc3339_us(doc["occurred_at"]) + 7 * HOUR_US
            day = parse_rfc3339_us(doc["plan_date"] + "T00:00:00Z")
            monday = day - ((day // DAY_US + 3) % 7) * DAY_US
            assert monday <= made < day + DAY_US + 2 * DAY_US * (doc.get("status") == "cancelled"), doc
        if doc.get("type") == "visit.completed":
            assert parse_rfc3339_us(doc["checked_in_at"]) < parse_rfc3339_us(doc["checked_out_at"])
        if doc.get("type") == "order.placed" and "ORD-BAD" not in str(doc.get("order_id")):
            placements[(doc.get("outlet_id"), doc.get("order_id"), doc["event_id"])] += 1
    for kind in ("visit.planned", "order.cancelled", "order.returned"):
        assert types[kind] > 20, (kind, types)
    cancelled = [call for call, docs in plans.items() if any(d.get("status") == "cancelled" for d in docs)]
    assert 0.02 * len(plans) < len(cancelled) < 0.15 * len(plans)
    by_order = Counter((outlet, order) for outlet, order, _ in placements)
    assert sum(1 for n in by_order.values() if n > 1) > 5  # one order id, two event ids


def test_field_execution_kpis_have_values_at_now_from_the_history_alone():
    values = oracle_kpis([t.message.value for t in HISTORY], format_rfc3339_us(NOW), OracleSettings())

    def value(key):
        return float((values.get(key) or {}).get("value") or 0)

    for window in ("7d", "30d"):
        # most planned calls visited on plan, most visits on a plan
        assert 0.6 < value(f"call_compliance|{window}|global|all") < 0.95, window
        assert 0 < value(f"unplanned_visits|{window}|global|all") < value(f"calls_on_plan|{window}|global|all")
        assert 0 < value(f"coverage|{window}|global|all") <= 1
        assert 5 <= value(f"avg_visit_minutes|{window}|global|all") <= 40
        assert value(f"returns|{window}|global|all") > 0
        assert 0 < value(f"net_sales_amount|{window}|global|all") < value(f"sales_amount|{window}|global|all")
    assert value("registered_outlets|-|global|all") > 0.8 * CONFIG.outlets
    assert 0 < value("retention_rate|mtd|global|all") < 1


def test_beat_plans_come_every_week_and_stay_bounded():
    """A week of live traffic past the history: Monday's beat is sent on Monday (local), and the
    plans held are only the current week's."""
    config = live_traffic.LiveConfig(seed=7, history_events=0, rate=0.5, outlets=200, reps=10)
    simulation = live_traffic._LiveSimulation(config, NOW)
    mondays = set()
    held = 0
    for timed in simulation.messages():
        if timed.due_us > NOW + 8 * DAY_US:
            break
        try:
            doc = orjson.loads(timed.message.value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        if doc.get("type") == "visit.planned" and doc.get("status") is None:
            mondays.add(live_traffic._local_monday(parse_rfc3339_us(doc["occurred_at"])))
        held = max(held, sum(len(calls) for calls in simulation.plans.values()))
    assert len(mondays) == 2  # the week of NOW (from its Wednesday) and the next
    assert held <= config.reps * 6 * math.ceil(simulation.calls_per_day)
