"""The scope stage's calendar periods (spec 8): which scopes publish period values, the period
clock at the stage's `as_of`, and the values of a scope's summed period groups.

Stage 1 sends each scope's period sums with its vector (stream/kafka/wire_partials.py); the stage
sums them per group over the source partitions and reads them against its own clock, so an alias
moves when the stage's clock crosses a boundary, whatever the sources sent last. Pure: time is
passed in.
"""

from __future__ import annotations

from typing import Sequence

from stream.core.calendar import Calendar, is_designator
from stream.core.config import KpiSettings
from stream.core.engine import Family, Layouts
from stream.core.kpis import KpiValue
from stream.core.period_views import PeriodReader, is_published
from stream.core.periods import PeriodClock
from stream.stages.scope_board import ScopeKey, ScopePartials


class ScopePeriods:
    def __init__(self, settings: KpiSettings, layouts: Layouts, now_us: int) -> None:
        self.layouts = layouts
        self.clock: PeriodClock | None = None
        self.reader: PeriodReader | None = None
        if settings.periods:
            self.clock = PeriodClock(Calendar(settings.timezone, settings.periods), settings.period_history, now_us)
            self.reader = PeriodReader(settings, Layouts.build_periods(settings))
        # scopes that published period values: they keep being published (spec 13, zeros), and
        # are evaluated again when a boundary moves the aliases
        self.scopes: set[ScopeKey] = set()
        self._published_designators: set[str] = set()
        self.as_of_us = now_us
        # per scope, what its period values were last evaluated from at this clock: (open leads,
        # its summed groups as `(GroupKey, vector)` pairs -- tuples, which the cyclic GC stops
        # walking). Only groups that moved since are evaluated again; a boundary clears it all
        # (aliases and lmtd name other periods).
        self._evaluated: dict[ScopeKey, tuple] = {}

    def follow(self, as_of_us: int) -> bool:
        """Move the period clock to `as_of_us`; True when a period boundary was crossed."""
        self.as_of_us = as_of_us
        if self.clock is None or not self.clock.update(as_of_us):
            return False
        self._published_designators = self.reader.designators(self.clock)
        self._evaluated = {}
        return True

    def is_published_window(self, window: str) -> bool:
        """False for the designator of a period that left the published set."""
        if not is_designator(window):
            return True
        if not self._published_designators:
            self._published_designators = self.reader.designators(self.clock)
        return window in self._published_designators

    def values(self, key: ScopeKey, partials: ScopePartials, total: Sequence) -> list[KpiValue]:
        """The scope's period, alias and lmtd values from its summed groups (`total`: its summed
        rolling vector); none for a scope that never held period sums."""
        if self.clock is None:
            return []
        if not partials.groups and key not in self.scopes and not (
                key[0] == Family.OUTLET.value and total[self.layouts.outlet.registered]):
            return []  # (registered outlets give coverage and active rate period values: spec 10.2)
        self.scopes.add(key)
        family = key[0]
        open_leads = total[self.layouts.lead.open] if family == Family.LEAD.value else 0
        registered = total[self.layouts.outlet.registered] if family == Family.OUTLET.value else 0
        groups = partials.total_groups()
        last = self._evaluated.get(key)
        previous = dict(last[1]) if last is not None and last[0] == (open_leads, registered) else None
        self._evaluated[key] = ((open_leads, registered), tuple(groups.items()))
        return self.reader.values(self.clock, family, (key[1], key[2]), groups, open_leads, previous, registered)

    def target_values(self, key: ScopeKey, partials: ScopePartials, targets: ScopePartials) -> list[KpiValue]:
        """The values of the scope's targets (spec 9) against its summed period groups."""
        if self.clock is None:
            return []
        self.scopes.add(key)  # re-evaluated at boundaries, like period values
        resolved = [target for source_targets in targets.groups.values() for target in source_targets]
        return self.reader.target_values(self.clock, key[0], (key[1], key[2]), partials.total_groups(), resolved,
                                         self.as_of_us)

    def carried_over(self, kept: tuple, received: tuple) -> tuple:
        """The groups of `kept` (a source's previous groups) that `received` (its newer ones)
        lacks and this stage still publishes. A source's group vanishes only when the source's
        clock passed the boundary that unpublishes it; a stage whose clock has not passed it yet
        keeps publishing the period's last sums rather than zeros."""
        if self.clock is None or not kept:
            return ()
        present = {key for key, _vector in received}
        return tuple((key, vector) for key, vector in kept
                     if key not in present and is_published(self.clock, key))

    def withdraw(self, key: ScopeKey) -> None:
        self.scopes.discard(key)
        self._evaluated.pop(key, None)
