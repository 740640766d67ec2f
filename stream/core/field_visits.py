"""Journey plans and what a visit adds beyond visits and productive visits (spec 10.1-10.3).

A planned call is (outlet, rep, plan date); the book keys it by (rep, slot of the local day's
start), the slot its time falls in, and a visit by the same key from its own time. Per window w:
- planned_calls: a planned (not cancelled) call is +1 over [day, day + w), in the plan rep's cell;
- calls_on_plan: +1 over [first matching visit's slot, day + w);
- unplanned_visits: a visit is +1 over [slot, slot + w) while its key has no planned call;
- visited_outlets: the union of the outlet's visit slots' intervals (own cell; covered outlets
  are the same union from onboarding on: registration.py);
- avg_visit_minutes: a visit with both check times, out not before in, is +1 and +its duration.
A plan's state is its latest event at or before the clock (the engine holds a plan event ahead of
the clock until the clock reaches it): a call planned or cancelled withdraws or adds its own and
its key's visits' contributions, O(visits of that rep, outlet and day).
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import date
from typing import TYPE_CHECKING

from stream.core.events import VisitCompleted, VisitPlanned
from stream.core.outlet_state import OutletState, attribute_stamp
from stream.core.period_calls import clipped, span
from stream.core.windows import Deltas, SlotUnion

if TYPE_CHECKING:
    from stream.core.outlets import OutletBook

_EMPTY: dict = {}


def visit_key(book: OutletBook, rep_id: str, t_us: int) -> tuple[str, int]:
    return rep_id, book.days.day_of(t_us).start_us // book._slot_us


def plan_key(book: OutletBook, event: VisitPlanned) -> tuple[str, int]:
    return event.rep_id, book.days.day_start_us(date.fromisoformat(event.plan_date)) // book._slot_us


def is_planned(state: OutletState, key: tuple[str, int]) -> bool:
    plan = (state.plans or _EMPTY).get(key)
    return plan is not None and plan[1]


def duration_us(visit: VisitCompleted) -> int | None:
    """Time in market (spec 10.3): None unless both check times are given, out not before in."""
    checked_in, checked_out = visit.checked_in_us, visit.checked_out_us
    if checked_in is None or checked_out is None or checked_out < checked_in:
        return None
    return checked_out - checked_in


def _periods(book: OutletBook, slot: int) -> tuple:
    return book.periods.clock.calendar.day_of(slot * book._slot_us).periods


# -- events ------------------------------------------------------------------------------------

def apply_plan(book: OutletBook, event: VisitPlanned) -> None:
    state = book.state(event.outlet_id)
    key = plan_key(book, event)
    stamp = attribute_stamp(event.occurred_us, event.event_id)
    plans = state.plans
    if plans is None:
        plans = state.plans = {}
    old = plans.get(key)
    if old is not None and old[0] >= stamp:
        return  # an older state of the call
    plans[key] = (stamp, event.planned)
    if (old is not None and old[1]) != event.planned:
        _emit_call(book, state, key, 1 if event.planned else -1)


def _emit_call(book: OutletBook, state: OutletState, key: tuple[str, int], sign: int) -> None:
    """A call planned (+1) or no longer planned (-1): its own contributions, and its visits'
    unplanned ones the other way."""
    layout, windows = book.layout, book._windows
    rep, day = key
    visits = (state.visit_days or _EMPTY).get(key, ())
    first = visits[0] if visits else None
    cell = state.cell(rep)
    out: Deltas = []
    for width, planned, on_plan in zip(windows, layout.planned, layout.on_plan):
        span(out, day, day + width, planned, sign)
        if first is not None:
            span(out, max(day, first), day + width, on_plan, sign)
    for slot in visits:
        for width, field in zip(windows, layout.unplanned):
            span(out, slot, slot + width, field, -sign)
    book.ledger.add_all(cell, out)
    tally = book.periods
    if tally is None:
        return
    playout = book.period_layout
    periods = _periods(book, day)
    tally.put(cell, periods, day, day, ((playout.planned[0], sign),))
    if first is not None:
        tally.put(cell, periods, day, max(day, first), ((playout.on_plan[0], sign),))
    for slot in visits:
        tally.put(cell, _periods(book, slot), slot, slot, ((playout.unplanned[0], -sign),))


def on_visit(book: OutletBook, state: OutletState, visit: VisitCompleted, slot: int) -> None:
    """A visit's plan, time-in-market and visited-outlet contributions."""
    layout, windows, tally = book.layout, book._windows, book.periods
    key = visit_key(book, visit.rep_id, visit.occurred_us)
    days = state.visit_days
    if days is None:
        days = state.visit_days = {}
    before = days.get(key, ())
    at = bisect_left(before, slot)
    days[key] = before[:at] + (slot,) + before[at:]
    cell = state.cell(visit.rep_id)
    out: Deltas = []
    items: list = []
    if not is_planned(state, key):
        for width, field in zip(windows, layout.unplanned):
            span(out, slot, slot + width, field, 1)
        if tally is not None:
            items.append((book.period_layout.unplanned[0], 1))
    elif not before or slot < before[0]:
        _move_on_plan(book, cell, key[1], before[0] if before else None, slot, out)
    duration = duration_us(visit)
    if duration is not None:
        state.timed_visits += (slot, visit.rep_id, duration)
        for width, timed, total in zip(windows, layout.timed, layout.visit_us):
            span(out, slot, slot + width, timed, 1)
            span(out, slot, slot + width, total, duration)
        if tally is not None:
            items += ((book.period_layout.timed[0], 1), (book.period_layout.visit_us[0], duration))
    book.ledger.add_all(cell, out)
    if tally is not None and items:
        tally.put(cell, _periods(book, slot), slot, slot, tuple(items))
    _visited(book, state, slot)


def _move_on_plan(book: OutletBook, cell: tuple, day: int, old_first: int | None, new_first: int,
                  out: Deltas) -> None:
    """A planned call's first matching visit is now at `new_first` (was `old_first`)."""
    for width, field in zip(book._windows, book.layout.on_plan):
        if old_first is not None:
            span(out, max(day, old_first), day + width, field, -1)
        span(out, max(day, new_first), day + width, field, 1)
    tally = book.periods
    if tally is None:
        return
    field = book.period_layout.on_plan[0]
    periods = _periods(book, day)
    if old_first is not None:
        tally.put(cell, periods, day, max(day, old_first), ((field, -1),))
    tally.put(cell, periods, day, max(day, new_first), ((field, 1),))


def _visited(book: OutletBook, state: OutletState, slot: int) -> None:
    """The outlet's visit slots gain `slot`: visited (and, once onboarded, covered) outlets."""
    slots = state.visit_slots
    index = bisect_left(slots, slot)
    if index < len(slots) and slots[index] == slot:
        return
    own: Deltas = []
    union = SlotUnion(slots)
    union.insert(slot, book._windows, book.layout.visited, own)
    state.visit_slots = union.slots
    slot_us = book._slot_us
    onboarded = state.onboarded_us
    onboard_slot = None if onboarded is None else onboarded // slot_us
    if onboard_slot is not None:
        own.extend(clipped(own, onboard_slot, book.visited_to_covered))
    cell = state.cell()
    book.ledger.add_all(cell, own)
    tally = book.periods
    if tally is None:
        return
    previous = slots[index - 1] if index else None
    following = slots[index] if index < len(slots) else None
    visited, covered = book.period_layout.visited[0], book.period_layout.covered[0]
    for position, period in enumerate(_periods(book, slot)):
        _index, start, end = period
        if previous is not None and previous * slot_us >= start:
            continue  # the period had a visit before: its first stays
        if following is not None and following * slot_us < end:
            tally.put_one(cell, position, period, following, following, ((visited, -1),))
            if onboard_slot is not None:
                tally.put_one(cell, position, period, following, max(following, onboard_slot), ((covered, -1),))
        tally.put_one(cell, position, period, slot, slot, ((visited, 1),))
        if onboard_slot is not None:
            tally.put_one(cell, position, period, slot, max(slot, onboard_slot), ((covered, 1),))


# -- everything an outlet gave, to move or withdraw it (outlets.py `_move`, order_identity.py) --

def rolling_contributions(book: OutletBook, state: OutletState, settled: int, groups: dict) -> None:
    """Plans, unplanned and timed visits (by rep) and the visited union (own cell, None), as seen
    at slot `settled`: what closed by then is left out."""
    layout, windows = book.layout, book._windows
    visit_days = state.visit_days or _EMPTY
    for key, (_stamp, planned) in (state.plans or _EMPTY).items():
        if not planned:
            continue
        rep, day = key
        out = groups.setdefault(rep, [])
        visits = visit_days.get(key)
        for width, planned_field, on_plan in zip(windows, layout.planned, layout.on_plan):
            span(out, day, day + width, planned_field, 1, settled)
            if visits:
                span(out, max(day, visits[0]), day + width, on_plan, 1, settled)
    for key, visits in visit_days.items():
        if is_planned(state, key):
            continue
        out = groups.setdefault(key[0], [])
        for slot in visits:
            for width, field in zip(windows, layout.unplanned):
                span(out, slot, slot + width, field, 1, settled)
    timed = state.timed_visits
    for at in range(0, len(timed), 3):
        slot, rep, duration = timed[at:at + 3]
        out = groups.setdefault(rep, [])
        for width, count, total in zip(windows, layout.timed, layout.visit_us):
            span(out, slot, slot + width, count, 1, settled)
            span(out, slot, slot + width, total, duration, settled)
    slots = state.visit_slots
    if slots:
        SlotUnion(slots[bisect_left(slots, settled - max(windows) + 1):]).emit_all(
            windows, layout.visited, 1, groups.setdefault(None, []))


def period_calls(book: OutletBook, state: OutletState, since_us: int, groups: dict) -> None:
    """The same for the periods kept (see period_calls.py for the calls)."""
    from stream.core.registration import firsts

    layout, slot_us = book.period_layout, book._slot_us
    since_slot = -(-since_us // slot_us)
    visit_days = state.visit_days or _EMPTY
    for key, (_stamp, planned) in (state.plans or _EMPTY).items():
        rep, day = key
        if not planned or day < since_slot:
            continue
        calls = groups.setdefault(rep, [])
        periods = _periods(book, day)
        calls.append(("all", periods, day, day, ((layout.planned[0], 1),)))
        visits = visit_days.get(key)
        if visits:
            calls.append(("all", periods, day, max(day, visits[0]), ((layout.on_plan[0], 1),)))
    for key, visits in visit_days.items():
        if is_planned(state, key):
            continue
        calls = groups.setdefault(key[0], [])
        for slot in visits:
            if slot >= since_slot:
                calls.append(("all", _periods(book, slot), slot, slot, ((layout.unplanned[0], 1),)))
    timed = state.timed_visits
    for at in range(0, len(timed), 3):
        slot, rep, duration = timed[at:at + 3]
        if slot >= since_slot:
            groups.setdefault(rep, []).append(
                ("all", _periods(book, slot), slot, slot, ((layout.timed[0], 1), (layout.visit_us[0], duration))))
    own = groups.setdefault(None, [])
    calendar = book.periods.clock.calendar
    for (position, _index), (period, first) in firsts(state.visit_slots, since_us, slot_us, calendar, slot_us).items():
        own.append(("one", position, period, first, first, ((layout.visited[0], 1),)))
