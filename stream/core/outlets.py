"""Outlet, order and visit KPIs (spec 3.1-3.3): per-outlet state and its contributions.

Each outlet contributes slot deltas (see windows.py) to its scopes:
- active_accounts: the union of [x, x + w) over its distinct order slots x;
- reactivated_accounts: the same union over the slots of its reactivating orders (an order more
  than D after the previous one);
- dormant = ever_ordered - active, where ever_ordered switches on at its first order slot;
- first_order_conversion: onboarded in [b, b + w); converted in [slot(c), b + w) where c is the
  first order at or after onboarding, when c <= onboarded_at + N;
- orders / amount / lines and visits in [x, x + w); a visit is productive from the slot of its
  earliest linked order (or its own slot, if later) until x + w.

Contributions go to the outlet's *cell* (region, territory, distributor, channel, rep); the
engine rolls cells up into scopes. "Current hierarchy" view (spec 2): when an outlet's
attributes change, every contribution it made is withdrawn from its old cells and added to the
new ones. Orders keep the rep they name; orders naming none follow the assigned rep.
"""

from __future__ import annotations

import sys
from bisect import bisect_left, bisect_right

from stream.core import field_visits, order_identity, registration
from stream.core.assignments import TerritoryReps
from stream.core.calendar import Calendar
from stream.core.catalogue import GLOBAL_SCOPE, OutletLayout
from stream.core.cold_outlets import ColdOutlets
from stream.core.config import KpiSettings
from stream.core.events import OrderPlaced, OutletEvent, VisitCompleted
from stream.core.period_calls import clipped, put_calls
from stream.core.outlet_packing import pack_outlet, unpack_outlet
from stream.core.outlet_state import NO_ATTRIBUTES, Cell, OutletState, attribute_stamp
from stream.core.periods import PeriodTally
from stream.core.windows import Deltas, DeltaLedger, Number, Scope, SlotUnion

_EMPTY: dict = {}  # read-only stand-in for an outlet's dicts that were never written

# Outlets touched by the last `hot_limit` to 2 x `hot_limit` distinct outlet ids of a book stay
# objects; the others are packed (outlet_packing.py) into one heap (cold_outlets.py). Hot objects
# cost ~0.6 KB each, so a book holds at most ~10 MB of them at the default (KPI_HOT_OUTLETS);
# unpacking and packing an outlet costs a few us.
DEFAULT_HOT_OUTLETS = 8192


def _stamps_of(state: OutletState) -> tuple[bytes, ...]:
    stamps = state.attribute_stamps
    return (stamps,) * 5 if isinstance(stamps, bytes) else stamps


def _packed_stamps(stamps: list[bytes]) -> bytes | tuple[bytes, ...]:
    first = stamps[0]
    return first if all(stamp == first for stamp in stamps) else tuple(stamps)


def _order_sums_at(flat: tuple, slot: int, rep_id: str | None) -> tuple[int, bool]:
    """Where the (slot, rep) record starts in `OutletState.orders_by_slot` and whether it is there;
    if not, where it goes. A binary search: an outlet ordering daily for years has hundreds."""
    slots = flat[::5]
    record = bisect_left(slots, slot)
    while record < len(slots) and slots[record] == slot:
        if flat[5 * record + 1] == rep_id:
            return 5 * record, True
        record += 1
    return 5 * record, False


class OutletBook:
    """All outlets of one partition (or of a whole replay) and their scope ledger.

    Contributions are collected as (slot, field, delta) lists, one per cell an event touches, and
    handed to the ledger in one `add_all` call per cell."""

    def __init__(self, settings: KpiSettings, ledger: DeltaLedger, layout: OutletLayout,
                 hot_limit: int = DEFAULT_HOT_OUTLETS, periods: PeriodTally | None = None,
                 period_layout: OutletLayout | None = None) -> None:
        self.settings = settings
        # calendar periods (stream/core/periods.py): None when KPI_PERIODS is empty
        self.periods = periods
        self.period_layout = period_layout
        self.hot_limit = hot_limit
        self.ledger = ledger
        self.layout = layout
        # Outlets touched lately, as objects; the others at rest, packed (read through `state`).
        # An outlet in `hot` may have an older record in `cold`: `hot` wins.
        self.hot: dict[str, OutletState] = {}
        self.cold = ColdOutlets()
        self._hot_only = 0  # outlets in `hot` never yet packed into `cold`
        self._cold_handles: dict[str, int] = {}  # hot outlet id -> where `cold` keeps its record
        # outlets per (territory, assigned rep), kept as outlets arrive and move (assignments.py)
        self.assignments = TerritoryReps()
        # One tuple per distinct attribute combination (a few thousand cells for a million outlets),
        # each string interned: an outlet holds a reference, not its own 80-byte tuple. Packed
        # outlets name theirs by its index in `attribute_table` (append-only: indexes stay valid).
        self.canonical_attributes: dict[tuple, int] = {NO_ATTRIBUTES: 0}
        self.attribute_table: list[tuple] = [NO_ATTRIBUTES]
        # Ids touched since the last cooling, and in the epoch before it: the hot outlets.
        self._touched: set[str] = set()
        self._touched_before: set[str] = set()
        self._slot_us = settings.slot_us
        self._windows = tuple(w // settings.slot_seconds for w in settings.windows_seconds)
        self._order_fields = tuple(zip(self._windows, layout.orders, layout.amount, layout.lines))
        self._visit_fields = tuple(zip(self._windows, layout.visits, layout.productive))
        self._horizons_us = tuple(h * 1_000_000 for h in settings.conversion_horizons_seconds)
        self._dormancy_us = settings.dormancy_seconds * 1_000_000
        # local days of the business calendar: plan dates and visit dates (spec 10.1)
        self.days = periods.clock.calendar if periods is not None else Calendar(settings.timezone, ())
        # a visited (active) outlet's fields -> the same, restricted to registered outlets (10.2)
        self.visited_to_covered = dict(zip(layout.visited, layout.covered))
        self.active_to_registered = dict(zip(layout.active, layout.active_registered))

    def state(self, outlet_id: str) -> OutletState:
        """The outlet's state as an object (unpacked if it was at rest), for changing in place until
        the next `state` call of this book: that call may pack every outlet not touched lately."""
        touched = self._touched
        if outlet_id not in touched:
            if len(touched) >= self.hot_limit:
                self._cool()  # first: it may pack this very outlet
                touched = self._touched
            touched.add(outlet_id)
        state = self.hot.get(outlet_id)
        if state is None:
            packed, handle = self.cold.take(outlet_id)
            if packed is None:
                state = OutletState(outlet_id)
                self._hot_only += 1
                self.assignments.add(state.attributes)
            else:
                state = OutletState(outlet_id, *unpack_outlet(packed, self.attribute_table))
                self._cold_handles[outlet_id] = handle
            self.hot[outlet_id] = state
        return state

    def __len__(self) -> int:
        """Outlets tracked, hot or at rest."""
        return len(self.cold) + self._hot_only

    def _cool(self) -> None:
        """Pack the outlets of the epoch before this one that this one did not touch; start an epoch."""
        hot, cold, index = self.hot, self.cold, self.canonical_attributes
        # `hot` holds exactly the outlets of the two epochs: one joins it when it joins an epoch,
        # and leaves only here, as it leaves both
        handles = self._cold_handles
        for outlet_id in self._touched_before.difference(self._touched):
            state = hot.pop(outlet_id)
            if cold.put(outlet_id, pack_outlet(state, index[state.attributes]), handles.pop(outlet_id, 0)):
                self._hot_only -= 1
        self._touched_before, self._touched = self._touched, set()

    # -- events ------------------------------------------------------------------------------

    def apply_outlet_event(self, event: OutletEvent) -> None:
        state = self.state(event.outlet_id)
        stamp = attribute_stamp(event.occurred_us, event.event_id)
        new_attributes = list(state.attributes)
        stamps = list(_stamps_of(state))
        for index, value in enumerate(event.attributes):
            if value is not None and stamp > stamps[index]:
                stamps[index] = stamp
                new_attributes[index] = value
        state.attribute_stamps = _packed_stamps(stamps)
        attributes = tuple(new_attributes)
        if attributes != state.attributes:
            self._move(state, self._canonical(attributes))
        if event.type == "outlet.onboarded" and (
            state.onboarded_us is None or event.occurred_us < state.onboarded_us
        ):
            before = self.conversion(state)
            old_onboarded = state.onboarded_us
            state.onboarded_us = event.occurred_us
            own: Deltas = []
            self._replace_conversion(before, self.conversion(state), own)
            registration.onboarding_moved(self, state, old_onboarded, own)
            self.ledger.add_all(state.cell(), own)
            if self.periods is not None:
                self._period_conversion(state.cell(), before, -1)
                self._period_conversion(state.cell(), self.conversion(state), 1)

    def _canonical(self, attributes: tuple) -> tuple:
        index = self.canonical_attributes.get(attributes)
        if index is None:
            # a few hundred regions/territories/... shared by a million outlets: one copy each
            canonical = tuple(None if value is None else sys.intern(value) for value in attributes)
            index = self.canonical_attributes[canonical] = len(self.attribute_table)
            self.attribute_table.append(canonical)
        return self.attribute_table[index]

    def apply_order(self, order: OrderPlaced) -> bool:
        """True when the order's identity was placed before: ignored (`duplicate_order`)."""
        return order_identity.apply_order(self, order)

    def _place(self, state: OutletState, order: OrderPlaced) -> None:
        """A placement that is a new order, not cancelled: its contributions (spec 3.1-3.3)."""
        slot = order.occurred_us // self._slot_us
        own: Deltas = []  # to the outlet's cell (its assigned rep)
        conversion = self.conversion(state)  # before this order joins the times it derives from
        periods = self.periods
        if periods is not None:
            self._period_order(state, order, slot)
        self._insert_order_time(state, order.occurred_us, own)
        flat = state.orders_by_slot
        at, found = _order_sums_at(flat, slot, order.rep_id)
        if found:
            state.orders_by_slot = flat[:at + 2] + (
                flat[at + 2] + 1, flat[at + 3] + order.amount, flat[at + 4] + order.lines) + flat[at + 5:]
        else:
            state.orders_by_slot = flat[:at] + (slot, order.rep_id, 1, order.amount, order.lines) + flat[at:]
        sums: Deltas = []  # to the cell of the rep the order names
        self._emit_order_sums(sums, slot, 1, order.amount, order.lines, 1)
        self.ledger.add_all(state.cell(order.rep_id), sums)

        if order.visit_id is not None:
            if state.first_link_slot is None:
                state.first_link_slot = {}
            previous = state.first_link_slot.get(order.visit_id)
            if previous is None or slot < previous:
                state.first_link_slot[order.visit_id] = slot
                for visit_slot, visit_rep in (state.visits or _EMPTY).get(order.visit_id, ()):
                    productive: Deltas = []
                    if previous is not None:
                        self._emit_productive(productive, visit_slot, previous, -1)
                    self._emit_productive(productive, visit_slot, slot, 1)
                    self.ledger.add_all(state.cell(visit_rep), productive)
                    if periods is not None:
                        self._period_productive(state.cell(visit_rep), visit_slot, previous, slot)
        if conversion is not None and order.occurred_us >= conversion[1] and (
            conversion[2] is None or order.occurred_us < conversion[2]
        ):
            self._replace_conversion(conversion, self.conversion(state), own)
            if periods is not None:
                self._period_conversion(state.cell(), conversion, -1)
                self._period_conversion(state.cell(), self.conversion(state), 1)
        self.ledger.add_all(state.cell(), own)

    def apply_visit(self, visit: VisitCompleted) -> None:
        state = self.state(visit.outlet_id)
        slot = visit.occurred_us // self._slot_us
        if state.visits is None:
            state.visits = {}
        state.visits[visit.visit_id] = state.visits.get(visit.visit_id, ()) + ((slot, visit.rep_id),)
        out: Deltas = []
        link = (state.first_link_slot or _EMPTY).get(visit.visit_id)
        self._emit_visit(out, slot, link, 1)
        self.ledger.add_all(state.cell(visit.rep_id), out)
        if self.periods is not None:
            cell, periods = state.cell(visit.rep_id), self.periods.clock.calendar.day_of(visit.occurred_us).periods
            layout = self.period_layout
            self.periods.put(cell, periods, slot, slot, ((layout.visits[0], 1),))
            if link is not None:
                self.periods.put(cell, periods, slot, max(slot, link), ((layout.productive[0], 1),))
        field_visits.on_visit(self, state, visit, slot)

    # -- period contributions (stream/core/periods.py) ----------------------------------------

    def _period_order(self, state: OutletState, order: OrderPlaced, slot: int) -> None:
        """An order's period contributions, before it joins the outlet's order times: its sums,
        and the outlet's active / reactivated account in the periods where it comes first."""
        tally, layout, slot_us = self.periods, self.period_layout, self._slot_us
        calendar = tally.clock.calendar
        t_us = order.occurred_us
        periods = calendar.day_of(t_us).periods
        tally.put(state.cell(order.rep_id), periods, slot, slot,
                  ((layout.orders[0], 1), (layout.amount[0], order.amount), (layout.lines[0], order.lines)))
        times = state.order_times
        index = bisect_right(times, t_us)
        previous = times[index - 1] if index else None
        following = times[index] if index < len(times) else None
        cell = state.cell()
        active = layout.active[0]
        for position, period in enumerate(periods):
            _index, start, end = period
            if previous is not None and previous >= start:
                continue  # the period had an order at or before this one: its earliest stays
            old_slot = None
            if following is not None and following < end:
                old_slot = following // slot_us
                if old_slot == slot:
                    continue
                tally.put_one(cell, position, period, old_slot, old_slot, ((active, -1),))
            tally.put_one(cell, position, period, slot, slot, ((active, 1),))
            registration.first_order_moved(self, state, cell, position, period, old_slot, slot, times)
        # reactivations: the new order's and the following order's status may change
        gap = self._dormancy_us
        reactivated_now = previous is not None and t_us - previous > gap
        changes_following = following is not None and (
            (previous is not None and following - previous > gap) != (following - t_us > gap))
        if not reactivated_now and not changes_following:
            return
        new_times = times[:index] + (t_us,) + times[index:]
        affected = {(position, period) for position, period in enumerate(periods)}
        if changes_following:
            affected.update(enumerate(calendar.day_of(following).periods))
        field = layout.reactivated[0]
        for position, period in sorted(affected):
            _index, start, end = period
            before = _earliest_reactivating(times, start, end, gap)
            after = _earliest_reactivating(new_times, start, end, gap)
            before_slot = None if before is None else before // slot_us
            after_slot = None if after is None else after // slot_us
            if before_slot == after_slot:
                continue
            if before_slot is not None:
                tally.put_one(cell, position, period, before_slot, before_slot, ((field, -1),))
            if after_slot is not None:
                tally.put_one(cell, position, period, after_slot, after_slot, ((field, 1),))

    def _period_conversion(self, cell: Cell, conversion: tuple | None, sign: int) -> None:
        """first_order_conversion per period: onboarded in P counts from its slot; converted (per
        horizon) from its first order's slot, when that order is within the horizon."""
        if conversion is None:
            return
        onboard_slot, onboarded_us, first_order_us = conversion
        layout = self.period_layout
        periods = self.periods.clock.calendar.day_of(onboarded_us).periods
        self.periods.put(cell, periods, onboard_slot, onboard_slot, ((layout.onboarded[0], sign),))
        if first_order_us is None:
            return
        items = tuple((layout.converted[0][h], sign) for h, horizon_us in enumerate(self._horizons_us)
                      if first_order_us - onboarded_us <= horizon_us)
        if items:
            self.periods.put(cell, periods, onboard_slot, first_order_us // self._slot_us, items)

    def _period_productive(self, cell: Cell, visit_slot: int, old_link: int | None, new_link: int) -> None:
        """A visit's productive contribution moves to an earlier first linked order's slot."""
        field = self.period_layout.productive[0]
        periods = self.periods.clock.calendar.day_of(visit_slot * self._slot_us).periods
        if old_link is not None:
            self.periods.put(cell, periods, visit_slot, max(visit_slot, old_link), ((field, -1),))
        self.periods.put(cell, periods, visit_slot, max(visit_slot, new_link), ((field, 1),))

    def _period_contributions_by_rep(self, state: OutletState) -> dict[str | None, list]:
        """Every period contribution of the outlet to the periods kept (published, and lmtd's
        month), as put calls grouped by the rep their cell names: ("all", periods, shift, due,
        items) or ("one", position, period, shift, due, items). Orders and visits are placed in
        periods by slot (KpiSettings checks that period bounds are slot bounds)."""
        if not _contributed(state):
            return {}  # nothing contributed yet (an outlet's first attributes, at onboarding)
        tally, layout, slot_us = self.periods, self.period_layout, self._slot_us
        calendar = tally.clock.calendar
        since = tally.clock.oldest_start_us()
        own: list = []
        groups: dict[str | None, list] = {None: own}
        times = state.order_times
        first_active: set = set()
        first_reactivated: set = set()
        gap = self._dormancy_us
        for i in range(bisect_left(times, since), len(times)):
            t_us = times[i]
            reactivating = i > 0 and t_us - times[i - 1] > gap
            t_slot = t_us // slot_us
            for position, period in enumerate(calendar.day_of(t_us).periods):
                if (position, period[0]) not in first_active:
                    first_active.add((position, period[0]))
                    own.append(("one", position, period, t_slot, t_slot, ((layout.active[0], 1),)))
                if reactivating and (position, period[0]) not in first_reactivated:
                    first_reactivated.add((position, period[0]))
                    own.append(("one", position, period, t_slot, t_slot, ((layout.reactivated[0], 1),)))
        conversion = self.conversion(state)
        if conversion is not None and conversion[1] >= since:
            onboard_slot, onboarded_us, first_order_us = conversion
            periods = calendar.day_of(onboarded_us).periods
            own.append(("all", periods, onboard_slot, onboard_slot, ((layout.onboarded[0], 1),)))
            if first_order_us is not None:
                items = tuple((layout.converted[0][h], 1) for h, horizon_us in enumerate(self._horizons_us)
                              if first_order_us - onboarded_us <= horizon_us)
                if items:
                    own.append(("all", periods, onboard_slot, first_order_us // slot_us, items))
        since_slot = -(-since // slot_us)
        flat = state.orders_by_slot
        for at in range(5 * bisect_left(flat[0::5], since_slot), len(flat), 5):
            slot, rep, count, amount, lines = flat[at:at + 5]
            groups.setdefault(rep, []).append(
                ("all", calendar.day_of(slot * slot_us).periods, slot, slot,
                 ((layout.orders[0], count), (layout.amount[0], amount), (layout.lines[0], lines))))
        for visit_id, visits in (state.visits or _EMPTY).items():
            link = (state.first_link_slot or _EMPTY).get(visit_id)
            for visit_slot, rep in visits:
                if visit_slot < since_slot:
                    continue
                periods = calendar.day_of(visit_slot * slot_us).periods
                calls = groups.setdefault(rep, [])
                calls.append(("all", periods, visit_slot, visit_slot, ((layout.visits[0], 1),)))
                if link is not None:
                    calls.append(("all", periods, visit_slot, max(visit_slot, link), ((layout.productive[0], 1),)))
        field_visits.period_calls(self, state, since, groups)
        order_identity.return_period_calls(self, state, since, groups)
        own.extend(registration.period_calls(self, state))
        return groups

    def _move_periods(self, groups: dict[str | None, list], old_cells: dict, new_cells: dict) -> None:
        tally = self.periods
        for rep, calls in groups.items():
            old_cell, new_cell = old_cells[rep], new_cells[rep]
            if old_cell == new_cell:
                continue
            put_calls(tally, old_cell, calls, -1)
            put_calls(tally, new_cell, calls, 1)

    # -- contributions (appended to `out`, the deltas of one cell) -----------------------------

    def _insert_order_time(self, state: OutletState, t_us: int, out: Deltas) -> None:
        """Record an order time: active union, first order, and the reactivation gaps it changes."""
        layout, slot_us, gap, windows = self.layout, self._slot_us, self._dormancy_us, self._windows
        times = state.order_times
        index = bisect_right(times, t_us)
        previous = times[index - 1] if index else None
        following = times[index] if index < len(times) else None  # first order strictly later
        first_before = times[0] if times else None
        state.order_times = times[:index] + (t_us,) + times[index:]

        active = SlotUnion(state.order_slots)
        mark = len(out)
        active.insert(t_us // slot_us, windows, layout.active, out)
        state.order_slots = active.slots
        if state.onboarded_us is not None and len(out) > mark:  # active registered outlets (10.2)
            out.extend(clipped(out[mark:], state.onboarded_us // slot_us, self.active_to_registered))

        if first_before is None or t_us < first_before:
            if first_before is not None:
                out.append((first_before // slot_us, layout.ever_ordered, -1))
            out.append((t_us // slot_us, layout.ever_ordered, 1))

        reactivated_now = previous is not None and t_us - previous > gap
        if following is not None:
            was = previous is not None and following - previous > gap
            now = following - t_us > gap
            changes_following = was != now
        else:
            changes_following = False
        if not reactivated_now and not changes_following:
            return  # the common case: a regular order, no reactivation moves
        reactivations = SlotUnion(state.reactivation_slots, state.reactivation_slot_counts)
        if reactivated_now:
            reactivations.add(t_us // slot_us, windows, layout.reactivated, out)
        if changes_following:
            change = reactivations.add if now else reactivations.remove
            change(following // slot_us, windows, layout.reactivated, out)
        state.reactivation_slots, state.reactivation_slot_counts = reactivations.slots, reactivations.counts or None

    def conversion(self, state: OutletState) -> tuple[int, int, int | None] | None:
        """(onboard slot, onboarded_us, first order at or after onboarding), or None before
        onboarding: what the outlet contributes to first_order_conversion. Derived, not stored: the
        caller takes it before changing the fields it comes from, to withdraw it."""
        onboarded = state.onboarded_us
        if onboarded is None:
            return None
        times = state.order_times
        index = bisect_left(times, onboarded)
        return onboarded // self._slot_us, onboarded, times[index] if index < len(times) else None

    def _replace_conversion(self, before: tuple | None, after: tuple | None, out: Deltas) -> None:
        if before is not None:
            self._emit_conversion(out, before, -1)
        if after is not None:
            self._emit_conversion(out, after, 1)

    def _emit_conversion(self, out: Deltas, conversion: tuple, sign: int) -> None:
        onboard_slot, onboarded_us, first_order_us = conversion
        layout = self.layout
        for w_index, width in enumerate(self._windows):
            end = onboard_slot + width
            field_index = layout.onboarded[w_index]
            out.append((onboard_slot, field_index, sign))
            out.append((end, field_index, -sign))
            if first_order_us is None:
                continue
            start = first_order_us // self._slot_us
            if start >= end:
                continue
            for h_index, horizon_us in enumerate(self._horizons_us):
                if first_order_us - onboarded_us <= horizon_us:
                    field_index = layout.converted[w_index][h_index]
                    out.append((start, field_index, sign))
                    out.append((end, field_index, -sign))

    def _emit_order_sums(self, out: Deltas, slot: int, count: int, amount, lines: int, sign: int) -> None:
        layout = self.layout
        if sign < 0:
            count, amount, lines = -count, -amount, -lines
        for w_index, width in enumerate(self._windows):
            end = slot + width
            orders, amounts, line_counts = layout.orders[w_index], layout.amount[w_index], layout.lines[w_index]
            out.append((slot, orders, count))
            out.append((slot, amounts, amount))
            out.append((slot, line_counts, lines))
            out.append((end, orders, -count))
            out.append((end, amounts, -amount))
            out.append((end, line_counts, -lines))

    def _emit_visit(self, out: Deltas, visit_slot: int, link_slot: int | None, sign: int) -> None:
        layout = self.layout
        for w_index, width in enumerate(self._windows):
            field_index = layout.visits[w_index]
            out.append((visit_slot, field_index, sign))
            out.append((visit_slot + width, field_index, -sign))
        if link_slot is not None:
            self._emit_productive(out, visit_slot, link_slot, sign)

    def _emit_productive(self, out: Deltas, visit_slot: int, link_slot: int, sign: int) -> None:
        layout = self.layout
        start = max(visit_slot, link_slot)
        for w_index, width in enumerate(self._windows):
            end = visit_slot + width
            if start < end:
                field_index = layout.productive[w_index]
                out.append((start, field_index, sign))
                out.append((end, field_index, -sign))

    # -- moving between scopes ---------------------------------------------------------------

    def _move(self, state: OutletState, new_attributes: tuple[str | None, ...]) -> None:
        """Withdraw every contribution from the old cells and add it to the new ones. Each group
        of contributions is computed once; a group whose cell does not change (say, orders naming
        their rep when only the assigned rep changed) is left where it is."""
        current = self.ledger.slot
        groups = self._contributions_by_rep(state, current)
        period_groups = {} if self.periods is None else self._period_contributions_by_rep(state)
        old_cells = {rep: state.cell(rep) for rep in (*groups, *period_groups)}
        self.assignments.move(state.attributes, new_attributes)
        state.attributes = new_attributes
        for rep, deltas in groups.items():
            old_cell, new_cell = old_cells[rep], state.cell(rep)
            if old_cell != new_cell:
                self.ledger.move_all(old_cell, new_cell, deltas)
        if period_groups:
            self._move_periods(period_groups, old_cells, {rep: state.cell(rep) for rep in period_groups})

    def _contributions_by_rep(self, state: OutletState, settled: int) -> dict[str | None, Deltas]:
        """An outlet's contributions that still count or will change at a slot after `settled`,
        grouped by the rep their cell names (None: the assigned rep, whoever it is). An order or
        visit older than the longest window opened and closed every interval it has by `settled`:
        its deltas cancel out in any cell, so it is left out -- a move then costs what the outlet
        did within the longest window, not its whole history."""
        if not _contributed(state):
            return {}  # nothing contributed yet (an outlet's first attributes, at onboarding)
        layout, slot_us, windows = self.layout, self._slot_us, self._windows
        oldest_open = settled - max(windows) + 1  # a slot before this closed all its intervals
        own: Deltas = []
        groups: dict[str | None, Deltas] = {None: own}
        for slots, fields in ((state.order_slots, layout.active), (state.reactivation_slots, layout.reactivated)):
            # an interval ends at its slot + width or at the next slot, whichever is first
            SlotUnion(slots[bisect_left(slots, oldest_open):]).emit_all(windows, fields, 1, own)
        if state.order_times:
            own.append((state.order_times[0] // slot_us, layout.ever_ordered, 1))
        conversion = self.conversion(state)
        if conversion is not None:
            self._emit_conversion(own, conversion, 1)
        # Orders and visits still in some window: each interval's start is due by now (summed per
        # rep and field: the ledger needs only the sums) or, for an event ahead of the clock,
        # still to come; its end is to come, or it closed and the interval cancels out.
        due: dict[str | None, dict[int, Number]] = {}
        flat = state.orders_by_slot
        for at in range(5 * bisect_left(flat[0::5], oldest_open), len(flat), 5):
            slot, rep, count, amount, lines = flat[at:at + 5]
            out = groups.setdefault(rep, [])
            sums = due.get(rep)
            for width, orders, amounts, line_counts in self._order_fields:
                end = slot + width
                if end <= settled:
                    continue
                out.append((end, orders, -count))
                out.append((end, amounts, -amount))
                out.append((end, line_counts, -lines))
                if slot > settled:
                    out.append((slot, orders, count))
                    out.append((slot, amounts, amount))
                    out.append((slot, line_counts, lines))
                    continue
                if sums is None:
                    sums = due[rep] = {}
                sums[orders] = sums.get(orders, 0) + count
                sums[amounts] = sums.get(amounts, 0) + amount
                sums[line_counts] = sums.get(line_counts, 0) + lines
        for visit_id, visits in (state.visits or _EMPTY).items():
            link = (state.first_link_slot or _EMPTY).get(visit_id)
            for visit_slot, rep in visits:
                if visit_slot < oldest_open:
                    continue
                out = groups.setdefault(rep, [])
                sums = due.get(rep)
                if sums is None:
                    sums = due[rep] = {}
                for width, visits_field, productive_field in self._visit_fields:
                    end = visit_slot + width
                    _open_interval(out, sums, settled, visit_slot, end, visits_field)
                    if link is not None:  # productive from the first linked order's slot on
                        _open_interval(out, sums, settled, max(visit_slot, link), end, productive_field)
        for rep, sums in due.items():
            groups[rep].extend((settled, field, total) for field, total in sums.items())
        if state.onboarded_us is not None:
            own.extend(registration.rolling(self, state, state.onboarded_us // slot_us, settled))
        field_visits.rolling_contributions(self, state, settled, groups)
        order_identity.return_contributions(self, state, settled, groups)
        return groups


def _contributed(state: OutletState) -> bool:
    """Whether the outlet has given any contribution yet."""
    return bool(state.order_times or state.onboarded_us is not None or state.visits or state.plans
                or state.returns_by_slot)


def _earliest_reactivating(times: tuple[int, ...], start_us: int, end_us: int, gap_us: int) -> int | None:
    """The earliest order time in [start, end) more than `gap` after the order before it."""
    for i in range(bisect_left(times, start_us), len(times)):
        t_us = times[i]
        if t_us >= end_us:
            return None
        if i > 0 and t_us - times[i - 1] > gap_us:
            return t_us
    return None


def _open_interval(out: Deltas, due: dict[int, Number], settled: int, start: int, end: int, field: int) -> None:
    """+1 in `field` from slot `start` to `end`, as seen at slot `settled`: nothing once closed,
    the start into the due sums once reached."""
    if end <= settled or start >= end:
        return
    out.append((end, field, -1))
    if start > settled:
        out.append((start, field, 1))
    else:
        due[field] = due.get(field, 0) + 1


def outlet_cell_scopes(cell: Cell) -> tuple[Scope, ...]:
    region, territory, distributor, channel, rep = cell
    return (GLOBAL_SCOPE, ("region", region), ("territory", territory), ("distributor", distributor),
            ("channel", channel), ("rep", rep))
