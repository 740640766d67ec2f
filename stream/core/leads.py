"""Lead KPIs (spec 3.4): per-lead state and its slot-delta contributions.

A lead's whole contribution is a short list of (scope, slot, field, delta) computed from its
state alone (never from the clock): created -> new_leads in [created, created + w) and open from
its created slot until its close slot; its close -> won/lost (and value, cycle) in
[close, close + w). Open-lead age is held as two running sums, open count and sum of creation
instants, so the mean age at any `as_of` is (n * as_of - sum) / n without visiting any lead.
A lead whose events change is withdrawn (old list, negated) and added again (new list). The old
list is computed again from the state before the event rather than stored: stored, it would be a
fifth of a worker's heap (a dozen 4-tuples per lead, every lead kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter

from stream.core.catalogue import GLOBAL_SCOPE, LeadLayout
from stream.core.config import KpiSettings
from stream.core.events import UNASSIGNED, LeadEvent
from stream.core.periods import PeriodTally
from stream.core.windows import DeltaLedger, Scope

_NO_STAMP: tuple[int, str] = (-(1 << 80), "")
Contribution = tuple[Scope, int, int, object]  # scope, slot, field, delta


@dataclass(slots=True)
class LeadState:
    """A lead while one of its events is applied. The book keeps each lead as the plain tuple
    `record` returns -- every field an atom or a tuple of atoms -- which the cyclic GC stops
    walking after its first pass; a slotted object it walks in every full collection, and one per
    lead would make leads most of what a live worker's collector walks."""

    lead_id: str
    created_us: int | None = None
    owner: tuple[tuple[int, str], str | None] = (_NO_STAMP, None)  # (stamp, rep_id)
    region: tuple[tuple[int, str], str | None] = (_NO_STAMP, None)
    # Tuples, replaced when they grow (a lead has a handful of events): unlike lists they drop out
    # of the cyclic GC's walk, which otherwise visits every lead's history in each full collection.
    # Values given by lead.created / lead.updated: (occurred_us, event_id, value)
    values: tuple[tuple[int, str, Decimal], ...] = ()
    # Every close event: (occurred_us, event_id, won, value)
    closes: tuple[tuple[int, str, bool, Decimal | None], ...] = ()

    def record(self) -> tuple:
        """Everything but the id, in field order: `LeadState(lead_id, *record)` is this lead again."""
        return _record_of(self)

    def close(self) -> tuple[int, str, bool, Decimal | None] | None:
        """The earliest close by occurred_at; among equal instants the greater event_id."""
        if not self.closes:
            return None
        earliest = min(c[0] for c in self.closes)
        return max((c for c in self.closes if c[0] == earliest), key=lambda c: c[1])

    def won_value(self, close: tuple[int, str, bool, Decimal | None]) -> Decimal | None:
        """Latest value given at or before the close instant (the close event's own included)."""
        close_us, close_id, _won, close_value = close
        best: tuple[int, str, Decimal] | None = None
        for given in self.values:
            if given[0] <= close_us and (best is None or given[:2] > best[:2]):
                best = given
        if close_value is not None and (best is None or (close_us, close_id) > best[:2]):
            return close_value
        return None if best is None else best[2]


_record_of = attrgetter("created_us", "owner", "region", "values", "closes")


class LeadBook:
    def __init__(self, settings: KpiSettings, ledger: DeltaLedger, layout: LeadLayout,
                 periods: PeriodTally | None = None, period_layout: LeadLayout | None = None) -> None:
        self.ledger = ledger
        self.layout = layout
        self.periods = periods  # calendar periods (stream/core/periods.py), None without KPI_PERIODS
        self.period_layout = period_layout
        self.leads: dict[str, tuple] = {}  # lead_id -> LeadState.record()
        self._slot_us = settings.slot_us
        self._windows = tuple(w // settings.slot_seconds for w in settings.windows_seconds)

    def apply(self, event: LeadEvent) -> bool:
        """Apply one lead event. False when it is a second close: one of the lead's closes is then
        ignored (counted as already_closed) -- the new one, or the old one if the new is earlier."""
        record = self.leads.get(event.lead_id)
        state = LeadState(event.lead_id) if record is None else LeadState(event.lead_id, *record)
        before = self._contributions(state)
        periods_before = self._period_contributions(state) if self.periods is not None else ()
        stamp = (event.occurred_us, event.event_id)
        if event.rep_id is not None and stamp > state.owner[0]:
            state.owner = (stamp, event.rep_id)
        if event.region is not None and stamp > state.region[0]:
            state.region = (stamp, event.region)
        effective = True
        if event.type in ("lead.won", "lead.lost"):
            effective = not state.closes
            state.closes += ((event.occurred_us, event.event_id, event.type == "lead.won", event.value),)
        else:
            if event.value is not None:
                state.values += ((event.occurred_us, event.event_id, event.value),)
            if event.type == "lead.created" and (state.created_us is None or event.occurred_us < state.created_us):
                state.created_us = event.occurred_us
        self._recontribute(before, self._contributions(state))
        if self.periods is not None:
            periods_after = self._period_contributions(state)
            if periods_after != periods_before:
                put = self.periods.put
                for cell, periods, slot, items in periods_before:
                    put(cell, periods, slot, slot, tuple((field, -delta) for field, delta in items))
                for cell, periods, slot, items in periods_after:
                    put(cell, periods, slot, slot, items)
        self.leads[event.lead_id] = state.record()
        return effective

    def _period_contributions(self, state: LeadState) -> tuple:
        """(cell, periods, slot, items) of the lead: its creation in the periods of its creation
        instant, its close (won/lost, cycle, value) in those of the close instant."""
        if state.created_us is None:
            return ()
        layout, slot_us = self.period_layout, self._slot_us
        calendar = self.periods.clock.calendar
        cell = (state.owner[1] or UNASSIGNED, state.region[1] or UNASSIGNED)
        created_us = state.created_us
        out = [(cell, calendar.day_of(created_us).periods, created_us // slot_us, ((layout.created[0], 1),))]
        close = state.close()
        if close is not None:
            close_us, _close_id, won, _value = close
            if won:
                items = [(layout.won[0], 1), (layout.cycle_us[0], close_us - created_us)]
                value = state.won_value(close)
                if value is not None:
                    items += [(layout.valued_wins[0], 1), (layout.won_value[0], value)]
            else:
                items = [(layout.lost[0], 1)]
            out.append((cell, calendar.day_of(close_us).periods, close_us // slot_us, tuple(items)))
        return tuple(out)

    def _recontribute(self, before: tuple[Contribution, ...], after: tuple[Contribution, ...]) -> None:
        if after == before:
            return
        by_cell: dict[Scope, list] = {}  # one ledger call per cell: the lead's old one and new one
        for scope, slot, field_index, delta in before:
            by_cell.setdefault(scope, []).append((slot, field_index, -delta))
        for scope, slot, field_index, delta in after:
            by_cell.setdefault(scope, []).append((slot, field_index, delta))
        for scope, deltas in by_cell.items():
            self.ledger.add_all(scope, deltas)

    def _contributions(self, state: LeadState) -> tuple[Contribution, ...]:
        if state.created_us is None:
            return ()
        layout, slot_us = self.layout, self._slot_us
        scopes = ((state.owner[1] or UNASSIGNED, state.region[1] or UNASSIGNED),)  # the lead's cell
        created_us = state.created_us
        created_slot = created_us // slot_us
        out: list[Contribution] = []

        def window_span(slot: int, fields: tuple[int, ...], amount: object) -> None:
            for w_index, width in enumerate(self._windows):
                for scope in scopes:
                    out.append((scope, slot, fields[w_index], amount))
                    out.append((scope, slot + width, fields[w_index], -amount))

        window_span(created_slot, layout.created, 1)
        close = state.close()
        close_slot = None if close is None else close[0] // slot_us
        if close_slot is None or close_slot > created_slot:
            for scope in scopes:
                out.append((scope, created_slot, layout.open, 1))
                out.append((scope, created_slot, layout.open_created_us, created_us))
                if close_slot is not None:
                    out.append((scope, close_slot, layout.open, -1))
                    out.append((scope, close_slot, layout.open_created_us, -created_us))
        if close is not None:
            close_us, _close_id, won, _value = close
            if won:
                window_span(close_slot, layout.won, 1)
                window_span(close_slot, layout.cycle_us, close_us - created_us)
                value = state.won_value(close)
                if value is not None:
                    window_span(close_slot, layout.valued_wins, 1)
                    window_span(close_slot, layout.won_value, value)
            else:
                window_span(close_slot, layout.lost, 1)
        return tuple(out)


def lead_cell_scopes(cell: tuple[str, str]) -> tuple[Scope, ...]:
    owner, region = cell
    return (GLOBAL_SCOPE, ("rep", owner), ("region", region))
