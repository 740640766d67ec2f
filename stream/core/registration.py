"""The outlet universe (spec 10.2) and retention (spec 10.5): contributions that depend on an
outlet's onboarding and on its first order in each calendar period.

- registered_outlets: +1 from the onboarding slot on (no window);
- covered / active registered outlets: the outlet's visited / active union of intervals
  (windows.SlotUnion) from its onboarding slot on (`period_calls.clipped`); per period, +1 from
  the later of its first visit (order) in the period and its onboarding;
- retention, per period P and kind: `prev_active` +1 in P from the slot of the outlet's first
  order in the period before (always before P starts), `retained` +1 in P from the slot of its
  first order in P when it had one in the period before. churned = prev_active - retained.

An onboarding that arrives (or moves earlier) withdraws what the outlet gave from its previous
onboarding slot and adds it from the new one: O(the outlet's own visit and order slots since),
nothing when it comes first, as it usually does.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from stream.core.outlet_state import Cell, OutletState
from stream.core.period_calls import clipped, put_calls
from stream.core.windows import Deltas, SlotUnion

if TYPE_CHECKING:
    from stream.core.outlets import OutletBook


def rolling(book: OutletBook, state: OutletState, onboard_slot: int, settled: int) -> Deltas:
    """What the outlet gives its own cell, onboarded at `onboard_slot`, as seen at slot `settled`."""
    layout, windows = book.layout, book._windows
    oldest_open = settled - max(windows) + 1
    out: Deltas = [(onboard_slot, layout.registered, 1)]
    for slots, fields, to in ((state.visit_slots, layout.visited, book.visited_to_covered),
                              (state.order_slots, layout.active, book.active_to_registered)):
        if not slots:
            continue
        union: Deltas = []
        SlotUnion(slots[bisect_left(slots, oldest_open):]).emit_all(windows, fields, 1, union)
        out.extend(clipped(union, onboard_slot, to))
    return out


def firsts(times: tuple[int, ...], since_us: int, slot_us: int, calendar, scale: int = 1) -> dict:
    """(kind position, period index) -> (period, slot of the first of `times` in it), for the
    periods from the one holding `since_us` on. `times` are sorted instants, or slots (`scale`
    the slot length then)."""
    out: dict = {}
    start = bisect_left(times, -(-since_us // scale))
    for t in times[start:]:
        t_us = t * scale
        for position, period in enumerate(calendar.day_of(t_us).periods):
            key = (position, period[0])
            if key not in out:
                out[key] = (period, t_us // slot_us)
    return out


def period_calls(book: OutletBook, state: OutletState) -> list:
    """The outlet's covered, active registered and retention period contributions (own cell)."""
    tally, layout, slot_us = book.periods, book.period_layout, book._slot_us
    clock = tally.clock
    calendar = clock.calendar
    calls: list = []
    onboarded = state.onboarded_us
    if onboarded is not None:
        onboard_slot = onboarded // slot_us
        since = clock.oldest_start_us()
        for slots, scale, field in ((state.visit_slots, slot_us, layout.covered[0]),
                                    (state.order_times, 1, layout.active_registered[0])):
            for (position, _index), (period, first) in firsts(slots, since, slot_us, calendar, scale).items():
                calls.append(("one", position, period, first, max(first, onboard_slot), ((field, 1),)))
    times = state.order_times
    if times:
        since = retention_since(book)
        by_period = firsts(times, since, slot_us, calendar)
        for (position, index), (period, first) in by_period.items():
            calls.append(("period", position, index + 1, first, ((layout.prev_active[0], 1),)))
            if _ordered_in(book, times, position, index - 1):
                calls.append(("period", position, index, first, ((layout.retained[0], 1),)))
    return calls


def retention_since(book: OutletBook) -> int:
    """The start of the oldest period whose orders retention reads: the one before the oldest kept."""
    clock = book.periods.clock
    calendar = clock.calendar
    return min(calendar.bounds(kind, clock.oldest[position] - 1)[0] for position, kind in enumerate(calendar.kinds))


def _ordered_in(book: OutletBook, times: tuple[int, ...], position: int, index: int) -> bool:
    calendar = book.periods.clock.calendar
    start, end = calendar.bounds(calendar.kinds[position], index)
    at = bisect_left(times, start)
    return at < len(times) and times[at] < end


def _first_in(book: OutletBook, times: tuple[int, ...], position: int, index: int) -> int | None:
    calendar = book.periods.clock.calendar
    start, end = calendar.bounds(calendar.kinds[position], index)
    at = bisect_left(times, start)
    return times[at] if at < len(times) and times[at] < end else None


def onboarding_moved(book: OutletBook, state: OutletState, old_onboarded: int | None, own: Deltas) -> None:
    """`state.onboarded_us` changed from `old_onboarded`: withdraw and add again (own cell)."""
    slot_us, settled = book._slot_us, book.ledger.slot
    if old_onboarded is not None:
        own.extend((slot, field, -delta) for slot, field, delta
                   in rolling(book, state, old_onboarded // slot_us, settled))
    own.extend(rolling(book, state, state.onboarded_us // slot_us, settled))
    if book.periods is None:
        return
    cell = state.cell()
    new = state.onboarded_us
    if old_onboarded is not None:
        state.onboarded_us = old_onboarded
        put_calls(book.periods, cell, _registered_calls(book, state), -1)
        state.onboarded_us = new
    put_calls(book.periods, cell, _registered_calls(book, state), 1)


def _registered_calls(book: OutletBook, state: OutletState) -> list:
    return [call for call in period_calls(book, state) if call[0] == "one"]


def first_order_moved(book: OutletBook, state: OutletState, cell: Cell, position: int, period: tuple,
                      old_slot: int | None, new_slot: int, times: tuple[int, ...]) -> None:
    """An order became the first of the outlet in `period` (one kind's), its first being at
    `old_slot` before (None: none): active registered and retention follow. `times`: the order
    times without the new order."""
    tally, layout = book.periods, book.period_layout
    onboarded = state.onboarded_us
    if onboarded is not None:
        onboard_slot = onboarded // book._slot_us
        field = layout.active_registered[0]
        if old_slot is not None:
            tally.put_one(cell, position, period, old_slot, max(old_slot, onboard_slot), ((field, -1),))
        tally.put_one(cell, position, period, new_slot, max(new_slot, onboard_slot), ((field, 1),))
    index = period[0]
    moves = [(index + 1, layout.prev_active[0])]
    if _ordered_in(book, times, position, index - 1):
        moves.append((index, layout.retained[0]))
    for target, field in moves:
        if old_slot is not None:
            tally.put_period(cell, position, target, old_slot, ((field, -1),))
        tally.put_period(cell, position, target, new_slot, ((field, 1),))
    if old_slot is None:  # the period had no order: the next one may now retain the outlet
        following = _first_in(book, times, position, index + 1)
        if following is not None:
            tally.put_period(cell, position, index + 1, following // book._slot_us, ((layout.retained[0], 1),))
