"""Applying the field-execution events of spec 10 to the outlet book, and holding those whose
effect depends on the clock.

A plan's state and an order's cancellation count "at or before as_of" (slot rule): an event of
either kind in a slot after the engine's clock (an event up to KPI_FUTURE_TOLERANCE ahead) is
held and applied when the clock reaches its slot, so every value the engine reads at its clock
sees exactly the plans and cancellations of slots up to it. Returns need no holding: they are
contributions from their own slot on, like orders.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Iterator

from stream.core import field_visits, order_identity
from stream.core.events import Event, OrderCancelled, OrderReturned, VisitPlanned

if TYPE_CHECKING:
    from stream.core.outlets import OutletBook

FIELD_EVENTS = (VisitPlanned, OrderCancelled, OrderReturned)
_HELD = (VisitPlanned, OrderCancelled)


def is_field_event(event: Event) -> bool:
    return isinstance(event, FIELD_EVENTS)


def apply_field_event(book: OutletBook, event: Event) -> None:
    if isinstance(event, VisitPlanned):
        field_visits.apply_plan(book, event)
    elif isinstance(event, OrderCancelled):
        order_identity.apply_cancel(book, event)
    else:
        order_identity.apply_return(book, event)


class HeldEvents:
    """Plan and cancellation events in slots after the clock, by slot (a heap; rare and few)."""

    __slots__ = ("heap", "_count")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Event]] = []
        self._count = 0

    def hold(self, event: Event, slot_us: int, clock_slot: int) -> bool:
        """Keep the event if its slot is after `clock_slot`; False if it applies now."""
        slot = event.occurred_us // slot_us
        if not isinstance(event, _HELD) or slot <= clock_slot:
            return False
        self._count += 1
        heapq.heappush(self.heap, (slot, self._count, event))
        return True

    def due(self, clock_slot: int) -> Iterator[Event]:
        heap = self.heap
        while heap and heap[0][0] <= clock_slot:
            yield heapq.heappop(heap)[2]

    def __len__(self) -> int:
        return len(self.heap)
