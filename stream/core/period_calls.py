"""An outlet's period contributions written down as calls, to withdraw or move them whole.

A call is what a book passed to its `PeriodTally` (stream/core/periods.py), as a tuple:
- ("all", periods, shift_slot, due_slot, items): `put`, every kind's period of a day;
- ("one", position, period, shift_slot, due_slot, items): `put_one`, one kind's period;
- ("period", position, index, due_slot, items): `put_period`, one period and no lmtd (retention).
`put_calls` makes them again into a cell, times a sign: -1 withdraws what +1 added.
"""

from __future__ import annotations

from typing import Iterable

from stream.core.periods import PeriodTally


def put_calls(tally: PeriodTally, cell: tuple, calls: Iterable[tuple], sign: int) -> None:
    for call in calls:
        items = call[-1]
        if sign < 0:
            items = tuple((field, -delta) for field, delta in items)
        kind = call[0]
        if kind == "all":
            tally.put(cell, call[1], call[2], call[3], items)
        elif kind == "one":
            tally.put_one(cell, call[1], call[2], call[3], call[4], items)
        else:
            tally.put_period(cell, call[1], call[2], call[3], items)


def span(out: list, start: int, end: int, field: int, delta, settled: int | None = None) -> None:
    """`delta` in `field` over the slots [start, end); nothing when empty, nor (with `settled`)
    when it closed by slot `settled` -- its two deltas then cancel out in any cell."""
    if start >= end or (settled is not None and end <= settled):
        return
    out.append((start, field, delta))
    out.append((end, field, -delta))


def clipped(deltas: Iterable[tuple[int, int, int]], from_slot: int, fields: dict[int, int]) -> list:
    """Deltas of a union of intervals (windows.SlotUnion) restricted to slots >= `from_slot`, in
    the fields `fields` maps them to: each delta moves to max(its slot, from_slot), so an interval
    ending before `from_slot` nets to nothing and one spanning it starts there. Registered
    outlets that are active or visited (spec 10.2) are such a restriction, from onboarding on."""
    return [(slot if slot > from_slot else from_slot, fields[field], delta)
            for slot, field, delta in deltas if field in fields]
