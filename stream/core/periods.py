"""Calendar period values (spec 8): per-scope sums per period, kept incrementally.

A period value counts an event at t in period P at `as_of` iff start(P) <= t < end(P) and
slot(t) <= slot(as_of). Unlike a rolling window nothing ever *leaves* a period: each contribution
is one delta that switches on at a slot (the event's own, or later: a visit becomes productive at
its first linked order's slot, an onboarding converts at its first order's) and stays. So a
contribution is `(cell, kind, period index) += delta from slot d on`: `PeriodLedger` applies it at
once when d <= the clock's slot (nearly always) and holds it until then otherwise. An event costs
a few dict updates per configured kind -- never a walk over outlets, slots or periods.

Distinct counts (active, reactivated accounts) are per-outlet facts per period: "its earliest
(reactivating) order in P", which the outlet book derives from its sorted order times and moves
when an order arrives earlier (stream/core/outlets.py).

`lmtd` (last month to date): with P0 the current month and P1 the one before, an event of P1
counts iff slot(t) <= slot(m), m = start(P1) + (as_of - start(P0)); i.e. iff as_of >= slot(t)*R +
len(P1). So each contribution to a month also goes, shifted by the month's length, to a second
ledger whose clock is the instant itself (not the slot): it becomes due as `m` passes it. A
contribution that also waits for a later slot on `as_of` (conversion, productive visits: spec
13.1, "only period membership moves to m") is due at the later of the two instants.

What is kept per scope is bounded by KPI_PERIOD_HISTORY: contributions to a period older than the
oldest published one are dropped when made, and the sums of such periods are dropped when the
clock crosses a period boundary (`PeriodRollup.prune`).
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterable

from stream.core.calendar import Calendar
from stream.core.windows import Number, Scope

_NEVER = 1 << 62  # an "oldest" index no period reaches: kinds without lmtd

PeriodKey = tuple  # (cell, kind position, period index)


class PeriodClock:
    """Which periods are published at the engine's clock: per configured kind (by position in
    `calendar.kinds`), the current period's index and the oldest published one's; shared, and
    changed in place, by every tally and rollup of an engine."""

    __slots__ = ("calendar", "history", "current", "oldest", "lmtd_oldest", "month", "_day_end_us", "_oldest_start",
                 "published_cache")

    def __init__(self, calendar: Calendar, history: int, now_us: int) -> None:
        self.calendar = calendar
        self.history = history
        kinds = calendar.kinds
        self.month = kinds.index("month") if "month" in kinds else -1
        self.current = [0] * len(kinds)
        self.oldest = [0] * len(kinds)
        self.lmtd_oldest = [_NEVER] * len(kinds)
        self._day_end_us = None
        self._oldest_start: int | None = None
        self.published_cache: tuple | None = None  # stream/core/period_views.py published_groups
        self.update(now_us)

    def update(self, now_us: int) -> bool:
        """Follow the clock; True when some current period changed (a boundary was crossed).
        Every period boundary is a local day's end, so between two of those nothing changes."""
        if self._day_end_us is not None and now_us < self._day_end_us:
            return False
        info = self.calendar.day_of(now_us)
        self._day_end_us = info.end_us
        self._oldest_start = None
        self.published_cache = None
        changed = False
        for position, (index, _start, _end) in enumerate(info.periods):
            if self.current[position] != index:
                changed = True
            self.current[position] = index
            self.oldest[position] = index - self.history
            if position == self.month:
                self.lmtd_oldest[position] = index - 1
        return changed

    def oldest_start_us(self) -> int:
        """The start of the oldest period anything is kept for (lmtd's month included): older
        contributions change no period value."""
        if self._oldest_start is not None:
            return self._oldest_start
        starts = []
        for position, kind in enumerate(self.calendar.kinds):
            index = min(self.oldest[position], self.lmtd_oldest[position])
            starts.append(self.calendar.bounds(kind, index)[0])
        self._oldest_start = min(starts)
        return self._oldest_start

    def published(self, position: int) -> range:
        """Indices of the published periods of a kind, the current one first."""
        current = self.current[position]
        return range(current, current - self.history - 1, -1)


class PeriodLedger:
    """Deltas per (key, field) applied once the clock reaches their due point. The clock is a
    slot for period sums, an instant (microseconds) for lmtd. Due deltas wait in `changes` until
    the rollup takes them; later ones in `scheduled` (few for periods: only events ahead of the
    clock; for lmtd, the current month's, due next month)."""

    __slots__ = ("clock", "changes", "scheduled", "_due")

    def __init__(self, clock: int) -> None:
        self.clock = clock
        self.changes: dict[PeriodKey, dict[int, Number]] = {}
        self.scheduled: dict[int, list] = {}
        self._due: list[int] = []

    def add(self, key: PeriodKey, due: int, items: Iterable[tuple[int, Number]]) -> None:
        if due <= self.clock:
            change = self.changes.get(key)
            if change is None:
                change = self.changes[key] = {}
            for field, delta in items:
                change[field] = change.get(field, 0) + delta
            return
        waiting = self.scheduled.get(due)
        if waiting is None:
            waiting = self.scheduled[due] = []
            heapq.heappush(self._due, due)
        waiting.append((key, tuple(items)))

    def advance(self, clock: int) -> None:
        if clock <= self.clock:
            return
        self.clock = clock
        due, changes = self._due, self.changes
        while due and due[0] <= clock:
            for key, items in self.scheduled.pop(heapq.heappop(due)):
                change = changes.get(key)
                if change is None:
                    change = changes[key] = {}
                for field, delta in items:
                    change[field] = change.get(field, 0) + delta

    def take_changes(self) -> dict[PeriodKey, dict[int, Number]]:
        changes, self.changes = self.changes, {}
        return changes

    def pending_count(self) -> int:
        return sum(len(waiting) for waiting in self.scheduled.values())


class PeriodTally:
    """Where a book puts its period contributions: one per family, writing to the family's
    period ledger and (with `month` configured) its lmtd ledger."""

    __slots__ = ("clock", "ledger", "lmtd", "slot_us", "month")

    def __init__(self, clock: PeriodClock, slot: int, now_us: int, slot_us: int) -> None:
        self.clock = clock
        self.ledger = PeriodLedger(slot)
        self.lmtd = PeriodLedger(now_us)
        self.slot_us = slot_us
        self.month = clock.month

    def put(self, cell: tuple, periods: tuple, shift_slot: int, due_slot: int,
            items: tuple[tuple[int, Number], ...]) -> None:
        """`items` (field, delta) count in every period in `periods` (a DayInfo's: the periods of
        the contribution's reference time) from slot `due_slot` on; in lmtd from the instant
        `shift_slot`*R + len(month), or `due_slot`*R if later."""
        clock = self.clock
        oldest, lmtd_oldest = clock.oldest, clock.lmtd_oldest
        ledger = self.ledger
        due_now = due_slot <= ledger.clock
        changes = ledger.changes
        month = self.month
        for position, (index, start, end) in enumerate(periods):
            if index >= oldest[position]:
                key = (cell, position, index)
                if due_now:  # nearly always: PeriodLedger.add's first branch, inline
                    change = changes.get(key)
                    if change is None:
                        change = changes[key] = {}
                    for field, delta in items:
                        change[field] = change.get(field, 0) + delta
                else:
                    ledger.add(key, due_slot, items)
            if position == month and index >= lmtd_oldest[position]:
                due = shift_slot * self.slot_us + (end - start)
                fixed = due_slot * self.slot_us
                self.lmtd.add((cell, position, index), due if due > fixed else fixed, items)

    def put_one(self, cell: tuple, position: int, period: tuple[int, int, int], shift_slot: int, due_slot: int,
                items: tuple[tuple[int, Number], ...]) -> None:
        """The same for one kind's period only (distinct counts: one per outlet and period)."""
        index, start, end = period
        if index >= self.clock.oldest[position]:
            self.ledger.add((cell, position, index), due_slot, items)
        if position == self.month and index >= self.clock.lmtd_oldest[position]:
            due = shift_slot * self.slot_us + (end - start)
            fixed = due_slot * self.slot_us
            self.lmtd.add((cell, position, index), due if due > fixed else fixed, items)

    def put_period(self, cell: tuple, position: int, index: int, due_slot: int,
                   items: tuple[tuple[int, Number], ...]) -> None:
        """`items` count in the period `index` of one kind from slot `due_slot` on, and in no lmtd:
        retention (spec 10.5), which a period has from its own and the previous period's orders."""
        if index >= self.clock.oldest[position]:
            self.ledger.add((cell, position, index), due_slot, items)

    def advance(self, slot: int, now_us: int) -> None:
        self.ledger.advance(slot)
        self.lmtd.advance(now_us)


class PeriodRollup:
    """Scope sums per period: `values[(scope, kind position, period index)]` is a tuple vector in
    the family's one-window layout. `flush` adds the due cell deltas to every scope of the cell;
    `prune` drops periods no longer published. `oldest` is the clock's list of oldest kept
    indices per kind (`PeriodClock.oldest`, or `lmtd_oldest` for the lmtd rollup)."""

    __slots__ = ("ledger", "scopes_of", "size", "oldest", "values", "dirty")

    def __init__(self, ledger: PeriodLedger, scopes_of: Callable[[tuple], tuple[Scope, ...]], size: int,
                 oldest: list[int]) -> None:
        self.ledger = ledger
        self.scopes_of = scopes_of
        self.size = size
        self.oldest = oldest
        self.values: dict[tuple, tuple] = {}
        self.dirty: set[Scope] = set()

    def flush(self) -> None:
        values, oldest, size = self.values, self.oldest, self.size
        moving: dict[tuple, list] = {}
        for (cell, position, index), change in self.ledger.take_changes().items():
            if index < oldest[position]:
                continue  # a period no longer published: its last value stays as it was
            moves = [(field, d) for field, d in change.items() if d]
            if not moves:
                # A period a cell touched for the first time is kept even when it nets to zero: an
                # engine rebuilt after a crash must still send its (zero) sums, or the scope stage
                # keeps the previous owner's non-zero sums of this source for the period.
                for scope in self.scopes_of(cell):
                    key = (scope, position, index)
                    if key not in values and key not in moving:
                        moving[key] = [0] * size
                continue
            for scope in self.scopes_of(cell):
                key = (scope, position, index)
                vector = moving.get(key)
                if vector is None:
                    stored = values.get(key)
                    vector = moving[key] = [0] * size if stored is None else list(stored)
                for field, d in moves:
                    vector[field] += d
        for key, vector in moving.items():
            values[key] = tuple(vector)
            self.dirty.add(key[0])

    def prune(self) -> set[Scope]:
        """Drop the sums of periods older than the oldest kept; the scopes that hold periods."""
        oldest = self.oldest
        stale = [key for key in self.values if key[2] < oldest[key[1]]]
        for key in stale:
            del self.values[key]
        return {key[0] for key in self.values} | {key[0] for key in stale}
