"""Reading calendar period values (spec 8) from a scope's period sums.

A scope's period sums are *groups*: `(kind position, period index, is_lmtd) -> vector` in the
family's one-window layout (stream/core/periods.py keeps them). The engine reads its own groups;
the scope stage sums the groups every source partition sent for a scope and reads those. Both
read them here, against a `PeriodClock` at their `as_of`: every published period under its
designator, the current one also under its alias, and `lmtd`. A group missing from the mapping
is all zeros.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from stream.core.calendar import ALIASES, LMTD, designator
from stream.core.config import KpiSettings
from stream.core.kpis import KpiValue, evaluate_activity_scope, evaluate_lead_period, evaluate_outlet_scope
from stream.core.periods import PeriodClock
from stream.core.windows import Scope

GroupKey = tuple[int, int, bool]  # (kind position, period index, is lmtd)

# family names as stream/core/engine.py's Family values: this module stays below the engine
OUTLET, LEAD = "outlet", "lead"


def published_groups(clock: PeriodClock) -> list[GroupKey]:
    """The groups whose values are published at the clock: every published period, and lmtd's
    month (the previous one) when months are configured."""
    out: list[GroupKey] = []
    for position in range(len(clock.calendar.kinds)):
        out.extend((position, index, False) for index in clock.published(position))
    if clock.month >= 0:
        out.append((clock.month, clock.current[clock.month] - 1, True))
    return out


def is_published(clock: PeriodClock, key: GroupKey) -> bool:
    position, index, lmtd = key
    if lmtd:
        return position == clock.month and index == clock.current[position] - 1
    return clock.oldest[position] <= index <= clock.current[position]


class PeriodReader:
    """Evaluates a scope's groups into KPI values; keeps designator texts (one per period)."""

    __slots__ = ("settings", "layouts", "_designators")

    def __init__(self, settings: KpiSettings, layouts) -> None:
        self.settings = settings
        self.layouts = layouts  # the engine's Layouts.build_periods(settings): one window per vector
        self._designators: dict[tuple[int, int], str] = {}

    def designator(self, clock: PeriodClock, position: int, index: int) -> str:
        label = self._designators.get((position, index))
        if label is None:
            if len(self._designators) > 10_000:
                self._designators.clear()
            label = self._designators[(position, index)] = designator(clock.calendar.kinds[position], index)
        return label

    def designators(self, clock: PeriodClock) -> set[str]:
        """The window names of every published period (not the aliases)."""
        return {self.designator(clock, position, index)
                for position in range(len(clock.calendar.kinds)) for index in clock.published(position)}

    def values(self, clock: PeriodClock, family: str, scope: Scope, groups: Mapping[GroupKey, Sequence],
               open_leads: int = 0, registered: int = 0) -> list[KpiValue]:
        """The scope's values of every published period, alias and lmtd. `open_leads`: the
        scope's current open leads (pipeline velocity of lead periods takes them); `registered`:
        its registered outlets (coverage and active rate of outlet periods take them)."""
        layout = getattr(self.layouts, family)
        zeros = (0,) * layout.size
        out: list[KpiValue] = []
        for position, kind in enumerate(clock.calendar.kinds):
            current = clock.current[position]
            for index in clock.published(position):
                labels = (self.designator(clock, position, index),)
                if index == current:
                    labels += (ALIASES[kind],)
                out.extend(self._evaluate(family, scope, groups.get((position, index, False), zeros), layout,
                                          labels, open_leads, registered, True))
        if clock.month >= 0:
            month = clock.current[clock.month] - 1
            out.extend(self._evaluate(family, scope, groups.get((clock.month, month, True), zeros), layout,
                                      (LMTD,), open_leads, registered, False))
        return out

    def _evaluate(self, family: str, scope: Scope, vector: Sequence, layout, labels: tuple[str, ...],
                  open_leads: int, registered: int, retention: bool) -> list[KpiValue]:
        if family == OUTLET:
            return evaluate_outlet_scope(vector, scope, self.settings, layout, labels=labels, registered=registered,
                                         retention=retention)
        if family == LEAD:
            return evaluate_lead_period(vector, scope, layout, labels, open_leads)
        return evaluate_activity_scope(vector, scope, self.settings, layout, labels=labels)


def sum_groups(group_sets) -> dict[GroupKey, list]:
    """Groups of several sources summed per key (each source's groups: `(key, vector)` pairs)."""
    total: dict[GroupKey, list] = {}
    for groups in group_sets:
        for key, vector in groups:
            kept = total.get(key)
            if kept is None:
                total[key] = list(vector)
            else:
                for i, x in enumerate(vector):
                    if x:
                        kept[i] += x
    return total
