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
import struct
from bisect import bisect_left
from decimal import Decimal
from typing import Callable, Iterable, Iterator

Scope = tuple[str, str]  # (scope type, scope id), e.g. ("territory", "JKT-01"), ("global", "all")
Number = int  # ints, or Decimal for amounts: anything that adds

_PAIR = struct.Struct("=qq")  # a waiting delta and its key (scope id * field count + field)
_pair = _PAIR.pack
_two_pairs = struct.Struct("=qqqq").pack  # a move: the source's delta and key, the target's


def _cents(amount: object) -> int | None:
    """A Decimal amount that is a whole number of cents, as that number; else None."""
    if type(amount) is not Decimal:
        return None
    try:
        numerator, denominator = amount.as_integer_ratio()
    except (ValueError, OverflowError):  # not finite
        return None
    cents, rest = divmod(numerator * 100, denominator)
    return None if rest else cents


def _packed(delta: Number, key: int) -> bytes | None:
    """The pair a waiting delta is kept as: an int as it is, whole cents as cents under -1 - key;
    None for anything else or past int64 (it then waits in `DeltaLedger.scheduled_other`)."""
    if type(delta) is int:
        value = delta
    else:
        value = _cents(delta)
        if value is None:
            return None
        key = -1 - key
    try:
        return _pair(value, key)
    except struct.error:  # past int64
        return None


def slot_of(t_us: int, slot_us: int) -> int:
    """The slot holding instant t (floor division: correct before 1970 too)."""
    return t_us // slot_us


class DeltaLedger:
    """Deltas per (scope, field) scheduled at slots, handed over once each as the clock reaches them.

    A delta for a slot <= the ledger's current slot is due at once; later ones wait and become due
    in `advance`. `take_changes()` returns the due deltas not taken yet, summed per scope and
    field: the consumer (ScopeRollup) keeps the running sums, so the ledger holds no vector per
    scope -- only what is still to come.

    What is still to come is most of a worker's heap (every order's closings a window later), so
    it is kept flat: per slot, a bytearray of int64 (delta, key) pairs, not summed until due --
    16 bytes a delta where a dict entry with its int key took ~70, and ~200 with a Decimal. An
    amount that is whole cents waits as cents (its key negated: -1 - key) and is handed over as
    a Decimal of two places, equal to the one given. Other deltas (finer amounts, an int past 64
    bits) wait in a dict per slot, summed, each stored as given when its key is new.
    """

    __slots__ = ("field_count", "slot", "scheduled", "scheduled_other", "_due", "changes", "_scope_ids",
                 "_scopes")

    def __init__(self, field_count: int, slot: int) -> None:
        self.field_count = field_count
        self.slot = slot
        # slot -> packed (delta, key) pairs; key = scope id * field_count + field. Neither
        # bytearrays nor dicts holding only ints and Decimals are tracked by the cyclic GC, which
        # would otherwise walk every pending delta in every full collection -- with a large state
        # that stops the event loop for a second or more (array.array is tracked).
        self.scheduled: dict[int, bytearray] = {}
        self.scheduled_other: dict[int, dict[int, Number]] = {}  # slot -> {key: delta}, non-int64
        self._due: list[int] = []  # heap of slots present in `scheduled` or `scheduled_other`
        self.changes: dict[Scope, dict[int, Number]] = {}  # due, not taken yet: scope -> {field: delta}
        self._scope_ids: dict[Scope, int] = {}
        self._scopes: list[Scope] = []

    def _scope_id(self, scope: Scope) -> int:
        scope_id = self._scope_ids.get(scope)
        if scope_id is None:
            scope_id = self._scope_ids[scope] = len(self._scopes)
            self._scopes.append(scope)
        return scope_id

    def _pairs_at(self, slot: int) -> bytearray:
        pairs = self.scheduled[slot] = bytearray()
        if slot not in self.scheduled_other:
            heapq.heappush(self._due, slot)
        return pairs

    def _schedule_other(self, slot: int, key: int, delta: Number) -> None:
        by_key = self.scheduled_other.get(slot)
        if by_key is None:
            by_key = self.scheduled_other[slot] = {}
            if slot not in self.scheduled:
                heapq.heappush(self._due, slot)
        # stored as given when new (no `0 + delta`): a Decimal shared with the caller, not a copy
        by_key[key] = delta if key not in by_key else by_key[key] + delta

    def _schedule(self, slot: int, key: int, delta: Number) -> None:
        packed = _packed(delta, key)
        if packed is None:
            self._schedule_other(slot, key, delta)
            return
        pairs = self.scheduled.get(slot)
        if pairs is None:
            pairs = self._pairs_at(slot)
        pairs += packed

    def add(self, scope: Scope, slot: int, field: int, delta: Number) -> None:
        self.add_all(scope, ((slot, field, delta),))

    def add_all(self, scope: Scope, items: Iterable[tuple[int, int, Number]]) -> None:
        """Every (slot, field, delta) one event moves in one scope, in one call: an order moves
        ~20, and a call per delta was a third of the engine's time per event."""
        current = self.slot
        change = None
        base = -1
        scheduled = self.scheduled
        for slot, field, delta in items:
            if slot <= current:
                if change is None:
                    change = self.changes.get(scope)
                    if change is None:
                        change = self.changes[scope] = {}
                change[field] = change.get(field, 0) + delta
                continue
            if base < 0:
                base = self._scope_id(scope) * self.field_count
            pairs = scheduled.get(slot)
            if pairs is not None and type(delta) is int:  # the common case inline, as _packed does
                try:
                    pairs += _pair(delta, base + field)
                except struct.error:  # past int64
                    pass
                else:
                    continue
            self._schedule(slot, base + field, delta)

    def move_all(self, source: Scope, target: Scope, items: Iterable[tuple[int, int, Number]]) -> None:
        """Take contributions out of `source` and put them into `target` (an outlet changing
        cells): the same as `add_all(source, negated items)` then `add_all(target, items)`, in one
        pass, with the due deltas summed per field first -- a moving outlet hands over every
        delta of the last window, most of them due, and the two cells need only their sums."""
        current = self.slot
        due: dict[int, Number] | None = None
        scheduled = self.scheduled
        source_base = target_base = -1
        for slot, field, delta in items:
            if slot <= current:
                if due is None:
                    due = {}
                due[field] = due.get(field, 0) + delta
                continue
            if source_base < 0:
                source_base = self._scope_id(source) * self.field_count
                target_base = self._scope_id(target) * self.field_count
            # _packed for both keys at once, inline: a move hands over hundreds of deltas, and
            # two calls per delta make a move ~1.4x dearer
            source_key, target_key = source_base + field, target_base + field
            if type(delta) is int:
                value = delta
            else:
                value = _cents(delta)
                source_key, target_key = -1 - source_key, -1 - target_key
            if value is not None:
                pairs = scheduled.get(slot)
                if pairs is None:
                    pairs = self._pairs_at(slot)
                try:
                    pairs += _two_pairs(-value, source_key, value, target_key)
                except struct.error:  # past int64: neither is appended
                    pass
                else:
                    continue
            self._schedule_other(slot, source_base + field, -delta)
            self._schedule_other(slot, target_base + field, delta)
        if due is not None:  # a zero sum still marks both cells touched, as add_all would
            for scope, sign in ((source, -1), (target, 1)):
                change = self.changes.get(scope)
                if change is None:
                    change = self.changes[scope] = {}
                for field, delta in due.items():
                    change[field] = change.get(field, 0) + sign * delta

    def advance(self, slot: int) -> None:
        """Move the current slot forward: every delta scheduled up to it becomes due."""
        if slot <= self.slot:
            return
        self.slot = slot
        due, changes, scopes, size = self._due, self.changes, self._scopes, self.field_count
        while due and due[0] <= slot:
            at = heapq.heappop(due)
            for key, delta in self._entries(self.scheduled.pop(at, b""), self.scheduled_other.pop(at, {})):
                scope_id, field = divmod(key, size)
                scope = scopes[scope_id]
                change = changes.get(scope)
                if change is None:
                    change = changes[scope] = {}
                change[field] = change.get(field, 0) + delta

    @staticmethod
    def _entries(pairs: bytes, other: dict[int, Number]) -> Iterator[tuple[int, Number]]:
        """(key, delta) of one slot: its int64 pairs, then its other deltas."""
        for delta, key in _PAIR.iter_unpack(pairs):
            if key < 0:
                yield -1 - key, Decimal(delta).scaleb(-2)
            else:
                yield key, delta
        yield from other.items()

    def take_changes(self) -> dict[Scope, dict[int, Number]]:
        """The due deltas since the last call, per scope (a scope whose deltas net to zero is
        still listed: it was touched)."""
        changes, self.changes = self.changes, {}
        return changes

    def waiting(self) -> dict[int, dict[tuple[Scope, int], Number]]:
        """What is still to come, summed: slot -> {(scope, field): delta} (a key whose deltas net
        to zero is listed). For tests and measurements: it builds a dict per slot."""
        size, scopes = self.field_count, self._scopes
        summed: dict[int, dict[tuple[Scope, int], Number]] = {}
        for slot in sorted(self._due):
            by_key = summed[slot] = {}
            for key, delta in self._entries(self.scheduled.get(slot, b""), self.scheduled_other.get(slot, {})):
                scope_id, field = divmod(key, size)
                named = (scopes[scope_id], field)
                by_key[named] = by_key.get(named, 0) + delta
        return summed

    def pending_count(self) -> int:
        """(slot, scope) pairs with deltas waiting."""
        size = self.field_count
        return sum(len({key // size for key, _ in self._entries(self.scheduled.get(slot, b""),
                                                                self.scheduled_other.get(slot, {}))})
                   for slot in self._due)


# Where a SlotUnion reports a change of its coverage: (slot, field, delta) appended to a list,
# field being the window's field in the caller's layout; DeltaLedger.add_all takes the list.
Deltas = list[tuple[int, int, int]]


class SlotUnion:
    """A multiset of slots and, per window w, the union of the intervals [x, x + w).

    An entity is "active in window w at S" iff S lies in that union (some x with S - w < x <= S).
    The union is held as disjoint intervals [x_i, min(x_i + w, x_{i+1})) over the distinct slots;
    adding or removing a slot changes at most its own interval and its predecessor's end, so it
    emits O(1) deltas per window. Slots may repeat (a count per slot); only distinct ones matter.
    """

    __slots__ = ("slots", "counts")

    def __init__(self, slots: tuple[int, ...] = (), counts: dict[int, int] | None = None) -> None:
        # Sorted, distinct; a tuple, replaced on change. With the dict of counts (ints only) it
        # is what an outlet stores (see OutletState): both drop out of the cyclic GC's walk,
        # where a list or this object itself would be walked in every full collection.
        self.slots = slots
        self.counts: dict[int, int] = {} if counts is None else counts

    def __bool__(self) -> bool:
        return bool(self.slots)

    def latest_at_or_before(self, slot: int) -> int | None:
        index = bisect_left(self.slots, slot + 1)
        return self.slots[index - 1] if index else None

    def add(self, slot: int, windows: tuple[int, ...], fields: tuple[int, ...], out: Deltas) -> None:
        """Add `slot`; the coverage changes of window i go to `out` under `fields[i]`."""
        count = self.counts.get(slot, 0)
        self.counts[slot] = count + 1
        if not count:
            self.insert(slot, windows, fields, out)

    def insert(self, slot: int, windows: tuple[int, ...], fields: tuple[int, ...], out: Deltas) -> None:
        """Add `slot` as a set member, with no count: for a union whose slots are never removed
        (an outlet's order slots), which then needs no counts at all. Nothing moves if present."""
        slots = self.slots
        index = bisect_left(slots, slot)
        if index < len(slots) and slots[index] == slot:
            return
        previous = slots[index - 1] if index else None
        following = slots[index] if index < len(slots) else None
        self.slots = slots[:index] + (slot,) + slots[index:]
        for field, width in zip(fields, windows):
            if previous is not None:
                _move_end(previous, width, following, slot, field, out)
            _interval(slot, width, following, 1, field, out)

    def remove(self, slot: int, windows: tuple[int, ...], fields: tuple[int, ...], out: Deltas) -> None:
        count = self.counts[slot]
        if count > 1:
            self.counts[slot] = count - 1
            return
        del self.counts[slot]
        index = bisect_left(self.slots, slot)
        slots = self.slots = self.slots[:index] + self.slots[index + 1:]
        previous = slots[index - 1] if index else None
        following = slots[index] if index < len(slots) else None
        for field, width in zip(fields, windows):
            _interval(slot, width, following, -1, field, out)
            if previous is not None:
                _move_end(previous, width, slot, following, field, out)

    def emit_all(self, windows: tuple[int, ...], fields: tuple[int, ...], sign: int, out: Deltas) -> None:
        """Every delta of the whole union, times `sign` (to move an entity between scopes)."""
        slots = self.slots
        for position, slot in enumerate(slots):
            following = slots[position + 1] if position + 1 < len(slots) else None
            for field, width in zip(fields, windows):
                _interval(slot, width, following, sign, field, out)


def _end(start: int, width: int, following: int | None) -> int:
    end = start + width
    return end if following is None or following > end else following


def _interval(start: int, width: int, following: int | None, sign: int, field: int, out: Deltas) -> None:
    out.append((start, field, sign))
    out.append((_end(start, width, following), field, -sign))


def _move_end(start: int, width: int, old_following: int | None, new_following: int | None,
              field: int, out: Deltas) -> None:
    old_end = _end(start, width, old_following)
    new_end = _end(start, width, new_following)
    if old_end != new_end:
        out.append((old_end, field, 1))
        out.append((new_end, field, -1))


class ScopeRollup:
    """Scope vectors as sums of cell deltas. Books write one cell per contribution (the finest
    grouping); `flush` adds each touched cell's due deltas to every scope the cell belongs to, so
    the fan-out to scopes is paid once per changed cell per flush, not per event.

    A scope's vector is a tuple between flushes, replaced when it moves: the cyclic GC walks every
    element of a list in each full collection but drops a tuple of numbers from its walk -- with a
    field force of thousands of reps, ~12,000 vectors of ~200 fields as lists would be most of
    what a worker's full collection walks."""

    __slots__ = ("cells", "scopes_of", "seen_cells", "values", "dirty")

    def __init__(self, cells: DeltaLedger, scopes_of: Callable[[tuple], tuple[Scope, ...]]) -> None:
        self.cells = cells
        self.scopes_of = scopes_of
        self.seen_cells: dict[tuple, None] = {}  # a dict of str tuples: the GC stops walking it
        self.values: dict[Scope, tuple] = {}
        self.dirty: set[Scope] = set()

    def flush(self) -> None:
        values, size, seen = self.values, self.cells.field_count, self.seen_cells
        moving: dict[Scope, list] = {}  # the vectors this flush moves, as lists until it ends
        for cell, change in self.cells.take_changes().items():
            moves = [(index, d) for index, d in change.items() if d]
            # A cell seen for the first time marks its scopes dirty even when it nets to zero: an
            # engine rebuilt after a crash must still send its (zero) vector for such a scope, or
            # stage 2 keeps the previous owner's non-zero vector for this source forever.
            if cell not in seen:
                seen[cell] = None
            elif not moves:
                continue
            for scope in self.scopes_of(cell):
                vector = moving.get(scope)
                if vector is None:
                    stored = values.get(scope)
                    vector = moving[scope] = [0] * size if stored is None else list(stored)
                for index, d in moves:
                    vector[index] += d
        for scope, vector in moving.items():
            values[scope] = tuple(vector)
        self.dirty.update(moving)

    def take_dirty(self) -> set[Scope]:
        self.flush()
        dirty, self.dirty = self.dirty, set()
        return dirty
