"""Order identity, cancellations and returns (spec 10.4).

An order is (outlet_id, order_id). Its placement is the earliest `order.placed` by occurred_at
(ties: greater event_id); any other placement of the identity is ignored (`duplicate_order`). An
order whose cancellation applied counts in no KPI, whichever came first; a cancellation of an
order not placed yet is kept and applies when the placement arrives. The engine holds a
cancellation ahead of the clock until the clock reaches its slot (spec: "at or before as_of").

A new order goes the usual way (outlets.py `_place`: O(1) in outlets and slots). A cancellation,
or an earlier placement replacing the order, is rare and changes an outlet's derived order facts
(times, slots, reactivations, sums, links) in ways that reach back: the outlet's contributions
that still count are listed (the same lists an outlet moving territory hands over), the facts
rebuilt from the kept placements, and the difference added -- every withdrawn contribution,
scheduled or due, leaves exactly. It costs the outlet's own orders and visits of the longest
window (and of the periods kept), never other outlets or the window's slots.

Returns count at their own time whatever became of the order: returns and returned_amount over
[slot, slot + w), in the cell of the rep they name (else the assigned rep's).
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal
from typing import TYPE_CHECKING, Callable

from stream.core.events import OrderCancelled, OrderPlaced, OrderReturned
from stream.core.outlet_state import OutletState
from stream.core.period_calls import put_calls, span
from stream.core.windows import Deltas

if TYPE_CHECKING:
    from stream.core.outlets import OutletBook


def record_of(order: OrderPlaced) -> tuple:
    return (order.occurred_us, order.event_id, order.rep_id, str(order.amount), order.lines, order.visit_id)


def apply_order(book: OutletBook, order: OrderPlaced) -> bool:
    """Apply a placement; True when it is a further placement of a known identity (ignored,
    whether it came before or after the one that is the order)."""
    state = book.state(order.outlet_id)
    records = state.order_records
    if records is None:
        records = state.order_records = {}
    record = record_of(order)
    old = records.get(order.order_id)
    cancelled = state.cancelled is not None and order.order_id in state.cancelled
    if old is None:
        records[order.order_id] = record
        if not cancelled:
            book._place(state, order)
        return False
    if order.occurred_us < old[0] or (order.occurred_us == old[0] and order.event_id > old[1]):
        if cancelled:
            records[order.order_id] = record
        else:
            def replace() -> None:
                records[order.order_id] = record
                rebuild_orders(book, state)
            rewrite(book, state, replace)
    return True


def apply_cancel(book: OutletBook, event: OrderCancelled) -> None:
    state = book.state(event.outlet_id)
    cancelled = state.cancelled
    if cancelled is None:
        cancelled = state.cancelled = {}
    if event.order_id in cancelled:
        return
    cancelled[event.order_id] = event.occurred_us
    if state.order_records is not None and event.order_id in state.order_records:
        rewrite(book, state, lambda: rebuild_orders(book, state))


def apply_return(book: OutletBook, event: OrderReturned) -> None:
    state = book.state(event.outlet_id)
    slot = event.occurred_us // book._slot_us
    flat = state.returns_by_slot
    at = 4 * bisect_left(flat[0::4], slot)
    while at < len(flat) and flat[at] == slot and flat[at + 1] != event.rep_id:
        at += 4
    if at < len(flat) and flat[at] == slot:
        state.returns_by_slot = flat[:at + 2] + (flat[at + 2] + 1, flat[at + 3] + event.amount) + flat[at + 4:]
    else:
        state.returns_by_slot = flat[:at] + (slot, event.rep_id, 1, event.amount) + flat[at:]
    out: Deltas = []
    layout = book.layout
    for width, count, amount in zip(book._windows, layout.returns, layout.returned_amount):
        span(out, slot, slot + width, count, 1)
        span(out, slot, slot + width, amount, event.amount)
    cell = state.cell(event.rep_id)
    book.ledger.add_all(cell, out)
    if book.periods is not None:
        playout = book.period_layout
        book.periods.put(cell, book.periods.clock.calendar.day_of(event.occurred_us).periods, slot, slot,
                         ((playout.returns[0], 1), (playout.returned_amount[0], event.amount)))


# -- rewriting an outlet's order facts --------------------------------------------------------

def rewrite(book: OutletBook, state: OutletState, change: Callable[[], None]) -> None:
    """Apply `change` to the outlet's state and its contributions: those that still count are
    withdrawn as they were and added as they are after it, per cell."""
    settled = book.ledger.slot
    before = book._contributions_by_rep(state, settled)
    period_before = book._period_contributions_by_rep(state) if book.periods is not None else {}
    change()
    after = book._contributions_by_rep(state, settled)
    for rep in {**before, **after}:
        deltas = [(slot, field, -delta) for slot, field, delta in before.get(rep, ())]
        deltas.extend(after.get(rep, ()))
        book.ledger.add_all(state.cell(rep), deltas)
    if book.periods is not None:
        period_after = book._period_contributions_by_rep(state)
        for rep, calls in period_before.items():
            put_calls(book.periods, state.cell(rep), calls, -1)
        for rep, calls in period_after.items():
            put_calls(book.periods, state.cell(rep), calls, 1)


def rebuild_orders(book: OutletBook, state: OutletState) -> None:
    """The derived order facts from the placements that are orders and not cancelled."""
    slot_us, gap = book._slot_us, book._dormancy_us
    cancelled = state.cancelled or {}
    live = sorted((record for order_id, record in (state.order_records or {}).items() if order_id not in cancelled),
                  key=lambda record: (record[0], record[1]))
    times = tuple(record[0] for record in live)
    state.order_times = times
    state.order_slots = tuple(sorted({t // slot_us for t in times}))
    counts: dict[int, int] = {}
    for previous, t in zip(times, times[1:]):
        if t - previous > gap:
            counts[t // slot_us] = counts.get(t // slot_us, 0) + 1
    state.reactivation_slots = tuple(sorted(counts))
    state.reactivation_slot_counts = counts or None
    sums: dict[tuple[int, str | None], list] = {}
    links: dict[str, int] = {}
    for t, _event_id, rep, amount, lines, visit_id in live:
        slot = t // slot_us
        kept = sums.get((slot, rep))
        if kept is None:
            sums[(slot, rep)] = [1, Decimal(amount), lines]
        else:
            kept[0] += 1
            kept[1] += Decimal(amount)
            kept[2] += lines
        if visit_id is not None and (visit_id not in links or slot < links[visit_id]):
            links[visit_id] = slot
    flat: tuple = ()
    for (slot, rep), (count, amount, lines) in sums.items():
        flat += (slot, rep, count, amount, lines)
    state.orders_by_slot = flat
    state.first_link_slot = links or None


def return_contributions(book: OutletBook, state: OutletState, settled: int, groups: dict) -> None:
    """The outlet's returns still in some window at slot `settled`, by the rep they name."""
    layout, windows = book.layout, book._windows
    flat = state.returns_by_slot
    for at in range(4 * bisect_left(flat[0::4], settled - max(windows) + 1), len(flat), 4):
        slot, rep, count, amount = flat[at:at + 4]
        out = groups.setdefault(rep, [])
        for width, count_field, amount_field in zip(windows, layout.returns, layout.returned_amount):
            span(out, slot, slot + width, count_field, count, settled)
            span(out, slot, slot + width, amount_field, amount, settled)


def return_period_calls(book: OutletBook, state: OutletState, since_us: int, groups: dict) -> None:
    layout, slot_us = book.period_layout, book._slot_us
    calendar = book.periods.clock.calendar
    flat = state.returns_by_slot
    for at in range(4 * bisect_left(flat[0::4], -(-since_us // slot_us)), len(flat), 4):
        slot, rep, count, amount = flat[at:at + 4]
        groups.setdefault(rep, []).append(("all", calendar.day_of(slot * slot_us).periods, slot, slot,
                                           ((layout.returns[0], count), (layout.returned_amount[0], amount))))
