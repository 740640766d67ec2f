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

"Current hierarchy" view (spec 2): when an outlet's region/territory/distributor/channel or
assigned rep changes, every contribution it made is withdrawn from the old scope and added to
the new one. Orders keep the rep they name; orders naming none follow the assigned rep.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from decimal import Decimal

from .catalogue import GLOBAL_SCOPE, OutletLayout
from .config import KpiSettings
from .events import UNASSIGNED, OrderPlaced, OutletEvent, VisitCompleted
from .windows import DeltaLedger, Scope, SlotUnion

# Attribute index -> scope type (distributor_id is published as scope "distributor").
_DIMENSION_SCOPE_TYPES = ("region", "territory", "distributor", "channel")
_REP_ATTRIBUTE = 4
_NO_STAMP: tuple[int, str] = (-(1 << 80), "")


@dataclass(slots=True)
class OrderSums:
    count: int = 0
    amount: Decimal = Decimal(0)
    lines: int = 0


@dataclass(slots=True)
class OutletState:
    outlet_id: str
    # Current attributes (region, territory, distributor_id, channel, rep_id) and, per field, the
    # (occurred_us, event_id) of the event that set it: the latest one with a value wins.
    attributes: list[str | None] = field(default_factory=lambda: [None] * 5)
    attribute_stamps: list[tuple[int, str]] = field(default_factory=lambda: [_NO_STAMP] * 5)
    onboarded_us: int | None = None
    order_times: list[int] = field(default_factory=list)  # exact, sorted, repeats kept
    order_slots: SlotUnion = field(default_factory=SlotUnion)
    reactivation_slots: SlotUnion = field(default_factory=SlotUnion)
    # Orders per slot, split by the rep they name (None: they follow the assigned rep).
    orders_by_slot: dict[int, dict[str | None, OrderSums]] = field(default_factory=dict)
    # visit_id -> [(visit slot, visit rep)]; visit_id -> slot of the earliest linked order
    visits: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    first_link_slot: dict[str, int] = field(default_factory=dict)
    # (onboard slot, onboarded_us, first order at or after onboarding) as last contributed.
    conversion: tuple[int, int, int | None] | None = None

    def dimension_scopes(self) -> tuple[Scope, ...]:
        attrs = self.attributes
        return (GLOBAL_SCOPE,) + tuple(
            (scope_type, attrs[index] or UNASSIGNED) for index, scope_type in enumerate(_DIMENSION_SCOPE_TYPES)
        )

    def assigned_rep_scope(self) -> Scope:
        return ("rep", self.attributes[_REP_ATTRIBUTE] or UNASSIGNED)


class OutletBook:
    """All outlets of one partition (or of a whole replay) and their scope ledger."""

    def __init__(self, settings: KpiSettings, ledger: DeltaLedger, layout: OutletLayout) -> None:
        self.settings = settings
        self.ledger = ledger
        self.layout = layout
        self.outlets: dict[str, OutletState] = {}
        self._slot_us = settings.slot_us
        self._windows = tuple(w // settings.slot_seconds for w in settings.windows_seconds)
        self._horizons_us = tuple(h * 1_000_000 for h in settings.conversion_horizons_seconds)
        self._dormancy_us = settings.dormancy_seconds * 1_000_000

    def state(self, outlet_id: str) -> OutletState:
        state = self.outlets.get(outlet_id)
        if state is None:
            state = self.outlets[outlet_id] = OutletState(outlet_id)
        return state

    # -- events ------------------------------------------------------------------------------

    def apply_outlet_event(self, event: OutletEvent) -> None:
        state = self.state(event.outlet_id)
        stamp = (event.occurred_us, event.event_id)
        new_attributes = list(state.attributes)
        for index, value in enumerate(event.attributes):
            if value is not None and stamp > state.attribute_stamps[index]:
                state.attribute_stamps[index] = stamp
                new_attributes[index] = value
        if new_attributes != state.attributes:
            self._move(state, new_attributes)
        if event.type == "outlet.onboarded" and (
            state.onboarded_us is None or event.occurred_us < state.onboarded_us
        ):
            state.onboarded_us = event.occurred_us
            self._refresh_conversion(state)

    def apply_order(self, order: OrderPlaced) -> None:
        state = self.state(order.outlet_id)
        slot = order.occurred_us // self._slot_us
        dims = state.dimension_scopes()
        outlet_scopes = dims + (state.assigned_rep_scope(),)
        order_scopes = dims + (("rep", order.rep_id) if order.rep_id else state.assigned_rep_scope(),)

        self._insert_order_time(state, order.occurred_us, outlet_scopes)
        sums = state.orders_by_slot.setdefault(slot, {}).setdefault(order.rep_id, OrderSums())
        sums.count += 1
        sums.amount += order.amount
        sums.lines += order.lines
        self._emit_order_sums(order_scopes, slot, 1, order.amount, order.lines, 1)

        if order.visit_id is not None:
            previous = state.first_link_slot.get(order.visit_id)
            if previous is None or slot < previous:
                state.first_link_slot[order.visit_id] = slot
                for visit_slot, visit_rep in state.visits.get(order.visit_id, ()):
                    scopes = dims + (("rep", visit_rep),)
                    if previous is not None:
                        self._emit_productive(scopes, visit_slot, previous, -1)
                    self._emit_productive(scopes, visit_slot, slot, 1)
        conversion = state.conversion
        if conversion is not None and order.occurred_us >= conversion[1] and (
            conversion[2] is None or order.occurred_us < conversion[2]
        ):
            self._refresh_conversion(state)

    def apply_visit(self, visit: VisitCompleted) -> None:
        state = self.state(visit.outlet_id)
        slot = visit.occurred_us // self._slot_us
        state.visits.setdefault(visit.visit_id, []).append((slot, visit.rep_id))
        scopes = state.dimension_scopes() + (("rep", visit.rep_id),)
        self._emit_visit(scopes, slot, state.first_link_slot.get(visit.visit_id), 1)

    # -- contributions -------------------------------------------------------------------------

    def _insert_order_time(self, state: OutletState, t_us: int, scopes: tuple[Scope, ...]) -> None:
        """Record an order time: active union, first order, and the reactivation gaps it changes."""
        layout, slot_us, gap = self.layout, self._slot_us, self._dormancy_us
        times = state.order_times
        index = bisect_right(times, t_us)
        previous = times[index - 1] if index else None
        following = times[index] if index < len(times) else None  # first order strictly later
        first_before = times[0] if times else None
        times.insert(index, t_us)

        emit_active = self._emitter(scopes, layout.active)
        state.order_slots.add(t_us // slot_us, self._windows, emit_active)

        if first_before is None or t_us < first_before:
            for scope in scopes:
                if first_before is not None:
                    self.ledger.add(scope, first_before // slot_us, layout.ever_ordered, -1)
                self.ledger.add(scope, t_us // slot_us, layout.ever_ordered, 1)

        emit_reactivated = self._emitter(scopes, layout.reactivated)
        if previous is not None and t_us - previous > gap:
            state.reactivation_slots.add(t_us // slot_us, self._windows, emit_reactivated)
        if following is not None:
            was = previous is not None and following - previous > gap
            now = following - t_us > gap
            if was != now:
                change = state.reactivation_slots.add if now else state.reactivation_slots.remove
                change(following // slot_us, self._windows, emit_reactivated)

    def _refresh_conversion(self, state: OutletState) -> None:
        scopes = state.dimension_scopes() + (state.assigned_rep_scope(),)
        if state.conversion is not None:
            self._emit_conversion(scopes, state.conversion, -1)
        onboarded = state.onboarded_us
        if onboarded is None:
            state.conversion = None
            return
        times = state.order_times
        index = bisect_left(times, onboarded)
        state.conversion = (onboarded // self._slot_us, onboarded, times[index] if index < len(times) else None)
        self._emit_conversion(scopes, state.conversion, 1)

    def _emit_conversion(self, scopes: tuple[Scope, ...], conversion: tuple, sign: int) -> None:
        onboard_slot, onboarded_us, first_order_us = conversion
        layout, add = self.layout, self.ledger.add
        for w_index, width in enumerate(self._windows):
            end = onboard_slot + width
            for scope in scopes:
                add(scope, onboard_slot, layout.onboarded[w_index], sign)
                add(scope, end, layout.onboarded[w_index], -sign)
            if first_order_us is None:
                continue
            start = first_order_us // self._slot_us
            if start >= end:
                continue
            for h_index, horizon_us in enumerate(self._horizons_us):
                if first_order_us - onboarded_us <= horizon_us:
                    field_index = layout.converted[w_index][h_index]
                    for scope in scopes:
                        add(scope, start, field_index, sign)
                        add(scope, end, field_index, -sign)

    def _emitter(self, scopes: tuple[Scope, ...], fields: tuple[int, ...]):
        add = self.ledger.add

        def emit(w_index: int, slot: int, delta: int) -> None:
            field_index = fields[w_index]
            for scope in scopes:
                add(scope, slot, field_index, delta)

        return emit

    def _emit_order_sums(self, scopes, slot: int, count: int, amount, lines: int, sign: int) -> None:
        layout, add = self.layout, self.ledger.add
        for w_index, width in enumerate(self._windows):
            end = slot + width
            for scope in scopes:
                add(scope, slot, layout.orders[w_index], sign * count)
                add(scope, end, layout.orders[w_index], -sign * count)
                add(scope, slot, layout.amount[w_index], amount if sign > 0 else -amount)
                add(scope, end, layout.amount[w_index], -amount if sign > 0 else amount)
                add(scope, slot, layout.lines[w_index], sign * lines)
                add(scope, end, layout.lines[w_index], -sign * lines)

    def _emit_visit(self, scopes, visit_slot: int, link_slot: int | None, sign: int) -> None:
        layout, add = self.layout, self.ledger.add
        for w_index, width in enumerate(self._windows):
            for scope in scopes:
                add(scope, visit_slot, layout.visits[w_index], sign)
                add(scope, visit_slot + width, layout.visits[w_index], -sign)
        if link_slot is not None:
            self._emit_productive(scopes, visit_slot, link_slot, sign)

    def _emit_productive(self, scopes, visit_slot: int, link_slot: int, sign: int) -> None:
        layout, add = self.layout, self.ledger.add
        start = max(visit_slot, link_slot)
        for w_index, width in enumerate(self._windows):
            end = visit_slot + width
            if start >= end:
                continue
            for scope in scopes:
                add(scope, start, layout.productive[w_index], sign)
                add(scope, end, layout.productive[w_index], -sign)

    # -- moving between scopes ---------------------------------------------------------------

    def _move(self, state: OutletState, new_attributes: list[str | None]) -> None:
        old_dims = state.dimension_scopes()
        old_rep = state.assigned_rep_scope()
        state.attributes = new_attributes
        new_dims = state.dimension_scopes()
        new_rep = state.assigned_rep_scope()
        dims_out = tuple(scope for scope in old_dims if scope not in new_dims)
        dims_in = tuple(scope for scope in new_dims if scope not in old_dims)
        if dims_out:
            self._emit_everything(state, dims_out, -1, dimension=True)
            self._emit_everything(state, dims_in, 1, dimension=True)
        if old_rep != new_rep:
            self._emit_everything(state, (old_rep,), -1, dimension=False)
            self._emit_everything(state, (new_rep,), 1, dimension=False)

    def _emit_everything(self, state: OutletState, scopes: tuple[Scope, ...], sign: int, dimension: bool) -> None:
        """All of an outlet's contributions to `scopes`, times `sign`.

        dimension=True: everything (scopes are region/territory/...); False: what follows the
        assigned rep (outlet-level KPIs and the orders that name no rep).
        """
        layout, slot_us = self.layout, self._slot_us
        state.order_slots.emit_all(self._windows, sign, self._emitter(scopes, layout.active))
        state.reactivation_slots.emit_all(self._windows, sign, self._emitter(scopes, layout.reactivated))
        if state.order_times:
            for scope in scopes:
                self.ledger.add(scope, state.order_times[0] // slot_us, layout.ever_ordered, sign)
        if state.conversion is not None:
            self._emit_conversion(scopes, state.conversion, sign)
        for slot, by_rep in state.orders_by_slot.items():
            for rep, sums in by_rep.items():
                if dimension or rep is None:
                    self._emit_order_sums(scopes, slot, sums.count, sums.amount, sums.lines, sign)
        if dimension:
            for visit_id, visits in state.visits.items():
                link = state.first_link_slot.get(visit_id)
                for visit_slot, _rep in visits:
                    self._emit_visit(scopes, visit_slot, link, sign)
