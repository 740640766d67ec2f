"""Slot arithmetic and the two structures every rolling KPI is built on.

Time is cut into slots of R seconds aligned to the epoch; `S` is the slot holding `as_of`, and a
window of `w` slots covers (S - w, S]. Every KPI here is a sum, per scope, of contributions that
switch on at one slot and off at a later one: an order counts in window w from its slot x until
slot x + w; an outlet is active while some order slot x satisfies x <= S < x + w. So each entity
contributes *deltas at slots*, independent of the clock, and the value at S is the sum of the
deltas at slots <= S. `DeltaLedger` keeps those sums per scope, holds deltas for slots after S
until the clock reaches them, and applies each one exactly once: the cost of a slot rollover is
the number of deltas scheduled for it, never the number of outlets or the window length.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from typing import Callable

Scope = tuple[str, str]  # (scope type, scope id), e.g. ("territory", "JKT-01"), ("global", "all")
Number = int  # ints, or Decimal for amounts: anything that adds


def slot_of(t_us: int, slot_us: int) -> int:
    """The slot holding instant t (floor division: correct before 1970 too)."""
    return t_us // slot_us


class DeltaLedger:
    """Per-scope vectors of running sums over deltas scheduled at slots.

    `values[scope][field]` is the sum of every delta added for (scope, field) at a slot <= the
    ledger's current slot. Deltas for later slots wait in `pending` and are applied by `advance`.
    `dirty` collects scopes whose values changed, for publishing.
    """

    __slots__ = ("field_count", "slot", "values", "pending", "_due", "dirty")

    def __init__(self, field_count: int, slot: int) -> None:
        self.field_count = field_count
        self.slot = slot
        self.values: dict[Scope, list] = {}
        self.pending: dict[int, dict[Scope, list]] = {}
        self._due: list[int] = []  # heap of slots present in `pending`
        self.dirty: set[Scope] = set()

    def add(self, scope: Scope, slot: int, field: int, delta: Number) -> None:
        if slot <= self.slot:
            vector = self.values.get(scope)
            if vector is None:
                vector = self.values[scope] = [0] * self.field_count
            vector[field] += delta
            self.dirty.add(scope)
            return
        by_scope = self.pending.get(slot)
        if by_scope is None:
            by_scope = self.pending[slot] = {}
            heapq.heappush(self._due, slot)
        vector = by_scope.get(scope)
        if vector is None:
            vector = by_scope[scope] = [0] * self.field_count
        vector[field] += delta

    def add_many(self, scopes: tuple[Scope, ...], slot: int, deltas: tuple[tuple[int, Number], ...]) -> None:
        """`add` of several (field, delta) pairs at one slot to several scopes, in one call."""
        if slot <= self.slot:
            values, dirty = self.values, self.dirty
            for scope in scopes:
                vector = values.get(scope)
                if vector is None:
                    vector = values[scope] = [0] * self.field_count
                for field, delta in deltas:
                    vector[field] += delta
                dirty.add(scope)
            return
        by_scope = self.pending.get(slot)
        if by_scope is None:
            by_scope = self.pending[slot] = {}
            heapq.heappush(self._due, slot)
        for scope in scopes:
            vector = by_scope.get(scope)
            if vector is None:
                vector = by_scope[scope] = [0] * self.field_count
            for field, delta in deltas:
                vector[field] += delta

    def advance(self, slot: int) -> None:
        """Move the current slot forward, applying every delta that became due."""
        if slot <= self.slot:
            return
        self.slot = slot
        due = self._due
        while due and due[0] <= slot:
            for scope, deltas in self.pending.pop(heapq.heappop(due)).items():
                vector = self.values.get(scope)
                if vector is None:
                    vector = self.values[scope] = [0] * self.field_count
                for index, delta in enumerate(deltas):
                    if delta:
                        vector[index] += delta
                self.dirty.add(scope)

    def take_dirty(self) -> set[Scope]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def pending_count(self) -> int:
        return sum(len(by_scope) for by_scope in self.pending.values())


# emit(window_index, slot, delta): where a SlotUnion reports a change of its coverage.
Emit = Callable[[int, int, int], None]


class SlotUnion:
    """A multiset of slots and, per window w, the union of the intervals [x, x + w).

    An entity is "active in window w at S" iff S lies in that union (some x with S - w < x <= S).
    The union is held as disjoint intervals [x_i, min(x_i + w, x_{i+1})) over the distinct slots;
    adding or removing a slot changes at most its own interval and its predecessor's end, so it
    emits O(1) deltas per window. Slots may repeat (a count per slot); only distinct ones matter.
    """

    __slots__ = ("slots", "counts")

    def __init__(self) -> None:
        self.slots: list[int] = []  # sorted, distinct
        self.counts: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self.slots)

    def latest_at_or_before(self, slot: int) -> int | None:
        index = bisect_left(self.slots, slot + 1)
        return self.slots[index - 1] if index else None

    def add(self, slot: int, windows: tuple[int, ...], emit: Emit) -> None:
        count = self.counts.get(slot, 0)
        self.counts[slot] = count + 1
        if count:
            return
        index = bisect_left(self.slots, slot)
        previous = self.slots[index - 1] if index else None
        following = self.slots[index] if index < len(self.slots) else None
        self.slots.insert(index, slot)
        for w_index, width in enumerate(windows):
            if previous is not None:
                _move_end(previous, width, following, slot, w_index, emit)
            _interval(slot, width, following, 1, w_index, emit)

    def remove(self, slot: int, windows: tuple[int, ...], emit: Emit) -> None:
        count = self.counts[slot]
        if count > 1:
            self.counts[slot] = count - 1
            return
        del self.counts[slot]
        index = bisect_left(self.slots, slot)
        del self.slots[index]
        previous = self.slots[index - 1] if index else None
        following = self.slots[index] if index < len(self.slots) else None
        for w_index, width in enumerate(windows):
            _interval(slot, width, following, -1, w_index, emit)
            if previous is not None:
                _move_end(previous, width, slot, following, w_index, emit)

    def emit_all(self, windows: tuple[int, ...], sign: int, emit: Emit) -> None:
        """Every delta of the whole union, times `sign` (to move an entity between scopes)."""
        slots = self.slots
        for position, slot in enumerate(slots):
            following = slots[position + 1] if position + 1 < len(slots) else None
            for w_index, width in enumerate(windows):
                _interval(slot, width, following, sign, w_index, emit)


def _end(start: int, width: int, following: int | None) -> int:
    end = start + width
    return end if following is None or following > end else following


def _interval(start: int, width: int, following: int | None, sign: int, w_index: int, emit: Emit) -> None:
    emit(w_index, start, sign)
    emit(w_index, _end(start, width, following), -sign)


def _move_end(start: int, width: int, old_following: int | None, new_following: int | None,
              w_index: int, emit: Emit) -> None:
    old_end = _end(start, width, old_following)
    new_end = _end(start, width, new_following)
    if old_end != new_end:
        emit(w_index, old_end, 1)
        emit(w_index, new_end, -1)


class ScopeRollup:
    """Scope vectors as sums of cell vectors. Books write one cell per contribution (the finest
    grouping); `flush` adds each changed cell's change since the last flush to every scope the
    cell belongs to, so the fan-out to scopes is paid once per changed cell per flush, not per event."""

    __slots__ = ("cells", "scopes_of", "propagated", "values", "dirty")

    def __init__(self, cells: DeltaLedger, scopes_of: Callable[[tuple], tuple[Scope, ...]]) -> None:
        self.cells = cells
        self.scopes_of = scopes_of
        self.propagated: dict[tuple, list] = {}
        self.values: dict[Scope, list] = {}
        self.dirty: set[Scope] = set()

    def flush(self) -> None:
        values, size = self.values, self.cells.field_count
        for cell in self.cells.take_dirty():
            now = self.cells.values[cell]
            before = self.propagated.get(cell)
            delta = list(now) if before is None else [a - b for a, b in zip(now, before)]
            # A cell seen for the first time marks its scopes dirty even when it nets to zero: an
            # engine rebuilt after a crash must still send its (zero) vector for such a scope, or
            # stage 2 keeps the previous owner's non-zero vector for this source forever.
            if before is not None and not any(delta):
                continue
            self.propagated[cell] = list(now)
            changes = [(index, d) for index, d in enumerate(delta) if d]
            for scope in self.scopes_of(cell):
                vector = values.get(scope)
                if vector is None:
                    vector = values[scope] = [0] * size
                for index, d in changes:
                    vector[index] += d
                self.dirty.add(scope)

    def take_dirty(self) -> set[Scope]:
        self.flush()
        dirty, self.dirty = self.dirty, set()
        return dirty
