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
from stream.core.targets import ResolvedTarget, actual_of, target_values
from stream.core.windows import Scope

GroupKey = tuple[int, int, bool]  # (kind position, period index, is lmtd)

# family names as stream/core/engine.py's Family values: this module stays below the engine
OUTLET, LEAD = "outlet", "lead"


def published_groups(clock: PeriodClock) -> tuple[GroupKey, ...]:
    """The groups whose values are published at the clock: every published period, and lmtd's
    month (the previous one) when months are configured. Kept on the clock until it next crosses
    a local midnight (stage 1 asks once per changed scope and flush)."""
    cached = getattr(clock, "published_cache", None)  # None too in a clock pickled before it existed
    if cached is not None:
        return cached
    out: list[GroupKey] = []
    for position in range(len(clock.calendar.kinds)):
        out.extend((position, index, False) for index in clock.published(position))
    if clock.month >= 0:
        out.append((clock.month, clock.current[clock.month] - 1, True))
    clock.published_cache = tuple(out)
    return clock.published_cache


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
               open_leads: int = 0, previous: Mapping[GroupKey, Sequence] | None = None,
               registered: int = 0) -> list[KpiValue]:
        """The scope's values of every published period, alias and lmtd. `open_leads`: the
        scope's current open leads (pipeline velocity of lead periods takes them); `registered`:
        its registered outlets (coverage and active rate of outlet periods take them).

        With `previous`, the groups these values were last evaluated from at the same clock (so
        under the same labels) and the same `open_leads` and `registered`: a group equal to its previous vector is
        left out (its values are those that evaluation gave), and of an outlet group only the
        values whose inputs moved are given. Between two flushes most of a scope's ~13 groups do
        not move (an event moves the periods holding its time), and the publisher would compare
        and drop each of their values anyway."""
        layout = getattr(self.layouts, family)
        zeros = (0,) * layout.size
        out: list[KpiValue] = []
        for position, kind in enumerate(clock.calendar.kinds):
            current = clock.current[position]
            for index in clock.published(position):
                vector = groups.get((position, index, False), zeros)
                before = None
                if previous is not None:
                    before = previous.get((position, index, False), zeros)
                    if before == vector:
                        continue
                labels = (self.designator(clock, position, index),)
                if index == current:
                    labels += (ALIASES[kind],)
                out.extend(self._evaluate(family, scope, vector, layout, labels, open_leads, registered, True, before))
        if clock.month >= 0:
            key = (clock.month, clock.current[clock.month] - 1, True)
            vector = groups.get(key, zeros)
            before = None
            if previous is not None:
                before = previous.get(key, zeros)
                if before == vector:
                    return out
            out.extend(self._evaluate(family, scope, vector, layout, (LMTD,), open_leads, registered, False, before))
        return out

    def target_values(self, clock: PeriodClock, family: str, scope: Scope, groups: Mapping[GroupKey, Sequence],
                      targets: Sequence[ResolvedTarget], as_of_us: int) -> list[KpiValue]:
        """The values of the scope's targets whose period is published (spec 9), each measured
        against the scope's value of its KPI in its period. An alias whose new period has no
        target for a KPI that had one in a closed published period gets that KPI's target keys as
        null: the alias published them before it moved (spec 13, zeros)."""
        layout = getattr(self.layouts, family)
        zeros = (0,) * layout.size
        slot_us = self.settings.slot_us
        out: list[KpiValue] = []
        current_targets = {(kpi, kind, position) for kpi, kind, position, index, _ in targets
                           if index == clock.current[position]}
        nulled: set[tuple] = set()
        for kpi, kind, position, index, value in targets:
            if not clock.oldest[position] <= index <= clock.current[position]:
                continue
            labels = (self.designator(clock, position, index),)
            period_kind = clock.calendar.kinds[position]
            start_us, end_us = clock.calendar.bounds(period_kind, index)
            if index == clock.current[position]:
                labels += (ALIASES[period_kind],)
            elif (kpi, kind, position) not in current_targets and (kpi, kind, position) not in nulled:
                nulled.add((kpi, kind, position))
                out.extend(target_values(kpi, kind, (ALIASES[period_kind],), scope, 0, None, start_us, end_us,
                                         as_of_us, slot_us))
            actual = actual_of(kpi, layout, groups.get((position, index, False), zeros), kind)
            out.extend(target_values(kpi, kind, labels, scope, actual, value, start_us, end_us, as_of_us, slot_us))
        return out

    def _evaluate(self, family: str, scope: Scope, vector: Sequence, layout, labels: tuple[str, ...],
                  open_leads: int, registered: int, retention: bool, before: Sequence | None = None) -> list[KpiValue]:
        """`retention`: the period has retention values (spec 10.5: not lmtd)."""
        if family == OUTLET:
            return evaluate_outlet_scope(vector, scope, self.settings, layout, before, labels=labels,
                                         registered=registered, retention=retention)
        if family == LEAD:
            return evaluate_lead_period(vector, scope, layout, labels, open_leads)
        return evaluate_activity_scope(vector, scope, self.settings, layout, labels=labels)


def sum_groups(group_sets) -> dict[GroupKey, tuple]:
    """Groups of several sources summed per key (each source's groups: `(key, vector)` pairs), as
    tuples: a group only one source holds is its vector itself. Zeros are skipped, as in
    stream/stages/scope_board.py's sum_vectors (a Decimal's exponent stays the first source's)."""
    total: dict[GroupKey, tuple] = {}
    for groups in group_sets:
        for key, vector in groups:
            kept = total.get(key)
            if kept is None:
                total[key] = vector if type(vector) is tuple else tuple(vector)
            else:
                total[key] = tuple([a + b if b else a for a, b in zip(kept, vector)])
    return total
