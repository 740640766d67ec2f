"""The state of one outlet (`OutletState`) and the stamps that order its attribute updates.

outlets.py applies events to these and derives the KPI contributions; outlet_packing.py packs
them into bytes while no event touches them. Both import from here, and this module from
neither. Engine snapshots pickle `OutletState` by this module's path.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter

from stream.core.events import UNASSIGNED

REP_ATTRIBUTE = 4
# The finest grouping: (region, territory, distributor, channel, rep). Contributions go to one
# cell; scopes are sums over cells (see windows.ScopeRollup), so an event updates one vector.
Cell = tuple[str, str, str, str, str]
NO_ATTRIBUTES: tuple[str | None, ...] = (None,) * 5
# An attribute's stamp, (occurred_us, event_id), packed into bytes that sort as the pair does:
# the instant as 8 big-endian bytes offset to be non-negative, then the id's UTF-8 (byte order of
# UTF-8 is code-point order, so ties compare as the strings do). ~75 bytes against ~175 for the
# tuple of an int and a str -- there is one per outlet (bench/scaling.py, memory).
NO_STAMP = b""
STAMP_OFFSET = 1 << 63


def attribute_stamp(occurred_us: int, event_id: str) -> bytes:
    return (occurred_us + STAMP_OFFSET).to_bytes(8, "big") + event_id.encode("utf-8", "surrogatepass")


@dataclass(slots=True)
class OutletState:
    """One outlet. Its containers are tuples and dicts of atoms -- never lists or nested mutable
    records -- so that the cyclic GC drops them from its walk: with hundreds of thousands of
    outlets every full collection would otherwise stop the worker for a second or more
    (docs/performance.md, "The cyclic garbage collector"). The dicts are None until first written
    (most outlets have no order or visit in a window of history; an empty dict is 64 bytes)."""

    outlet_id: str
    # Current attributes (region, territory, distributor_id, channel, rep_id) -- one shared tuple
    # per distinct combination (OutletBook.canonical_attributes) -- and, per field, the stamp of
    # the event that set it (attribute_stamp): the latest one with a value wins. The stamps are
    # one bytes object when a single event set all five (onboarding, usually), else a tuple of five.
    attributes: tuple[str | None, ...] = NO_ATTRIBUTES
    attribute_stamps: bytes | tuple[bytes, ...] = NO_STAMP
    onboarded_us: int | None = None
    order_times: tuple[int, ...] = ()  # exact, sorted, repeats kept
    # Distinct order slots: a SlotUnion (windows.py) that never removes, so it needs no counts.
    order_slots: tuple[int, ...] = ()
    # A SlotUnion that does remove, stored as its parts: the distinct slots and a count per slot.
    reactivation_slots: tuple[int, ...] = ()
    reactivation_slot_counts: dict[int, int] | None = None
    # Sums of the orders per (slot, rep the orders name or None: they follow the assigned rep),
    # flat: (slot, rep, count, amount, lines) repeated, sorted by slot (reps of one slot in order
    # of first appearance). A dict here would cost ~350 bytes per ordering outlet.
    orders_by_slot: tuple = ()
    # visit_id -> [(visit slot, visit rep)]; visit_id -> slot of the earliest linked order
    # (tuples, not lists, replaced on change: they drop out of the cyclic GC's walk)
    visits: dict[str, tuple[tuple[int, str], ...]] | None = None
    first_link_slot: dict[str, int] | None = None
    # Field execution (spec 10; stream/core/order_identity.py, field_visits.py). Placed orders by
    # order_id: (occurred_us, event_id, rep_id, amount as decimal text, lines, visit_id) of the
    # placement that is the order; the order ids whose cancellation applied (-> its occurred_us).
    order_records: dict[str, tuple] | None = None
    cancelled: dict[str, int] | None = None
    # returns per (slot, rep the return names or None), flat: (slot, rep, count, amount) repeated
    returns_by_slot: tuple = ()
    # distinct visit slots (a SlotUnion that never removes: visited / covered outlets); visit slots
    # per (rep, slot of the local day's start); timed visits flat: (slot, rep, duration_us) repeated
    visit_slots: tuple[int, ...] = ()
    visit_days: dict[tuple[str, int], tuple[int, ...]] | None = None
    timed_visits: tuple = ()
    # planned calls: (rep, slot of the plan date's start) -> (stamp of its latest event, planned?)
    plans: dict[tuple[str, int], tuple[bytes, bool]] | None = None

    def __reduce__(self):
        # Engine snapshots pickle a million of these: as the constructor's arguments they load in
        # about half the time of the default for slotted classes (a dict of slot values each).
        return OutletState, _outlet_fields(self)

    def cell(self, rep_id: str | None = None) -> Cell:
        """The cell this outlet's contributions go to: its current region, territory,
        distributor, channel, and `rep_id` (or, when None, its assigned rep)."""
        a = self.attributes
        return (a[0] or UNASSIGNED, a[1] or UNASSIGNED, a[2] or UNASSIGNED, a[3] or UNASSIGNED,
                rep_id or a[REP_ATTRIBUTE] or UNASSIGNED)


_outlet_fields = attrgetter(*(f.name for f in fields(OutletState)))
