"""Outlets per (territory, assigned rep): which reps serve a territory, kept up to date as outlets move.

Not a KPI -- the spec (section 2) has no territory x rep scope -- but an operational count the
worker exports (`kpi_stream_rep_territory_outlets`, stream/worker/metrics.py) so that a dashboard
can list the reps of a territory. Every outlet an `OutletBook` tracks counts once, at its current
territory and assigned rep (spec 2: latest value by `occurred_at`, field by field; `unassigned`
when never set): the same pair its outlet KPIs go to (`OutletState.cell`), so the counts of a
territory add up to the outlets behind that territory's outlet KPIs. An outlet named only by
orders or visits counts at (`unassigned`, `unassigned`) until an outlet event places it.

Kept incrementally by the book: one count more for each outlet it starts tracking, and one count
moved when an outlet event changes an outlet's territory or assigned rep. So reading the counts
never walks the outlets, most of which may be packed at rest (outlet_packing.py), and an event
that changes neither attribute costs nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from stream.core.events import UNASSIGNED
from stream.core.outlet_state import REP_ATTRIBUTE

TERRITORY_ATTRIBUTE = 1  # in an outlet's (region, territory, distributor, channel, rep) attributes
TerritoryRep = tuple[str, str]


def territory_rep(attributes: Sequence[str | None]) -> TerritoryRep:
    """The (territory, assigned rep) of an outlet with these current attributes."""
    return attributes[TERRITORY_ATTRIBUTE] or UNASSIGNED, attributes[REP_ATTRIBUTE] or UNASSIGNED


class TerritoryReps:
    """(territory, rep) -> outlets currently in the territory and assigned to the rep; pairs
    with no outlet are absent. A few thousand pairs at most (reps x the territories they serve)."""

    __slots__ = ("_outlets",)

    def __init__(self) -> None:
        self._outlets: dict[TerritoryRep, int] = {}

    def add(self, attributes: Sequence[str | None]) -> None:
        """An outlet the book did not track before, with these attributes."""
        key = territory_rep(attributes)
        self._outlets[key] = self._outlets.get(key, 0) + 1

    def move(self, old: Sequence[str | None], new: Sequence[str | None]) -> None:
        """A tracked outlet's attributes changed from `old` to `new`."""
        before, after = territory_rep(old), territory_rep(new)
        if before == after:
            return  # its region, distributor or channel moved: not this count's business
        outlets = self._outlets
        left = outlets[before] - 1
        if left:
            outlets[before] = left
        else:
            del outlets[before]  # the pair's series goes with its last outlet
        outlets[after] = outlets.get(after, 0) + 1

    def outlets(self) -> Mapping[TerritoryRep, int]:
        """A read-only view of the counts (live: it follows later events)."""
        return MappingProxyType(self._outlets)

