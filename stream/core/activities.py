"""Activity KPIs (spec 3.5): activity events per kind inside the window, for the global scope and
the event's rep. An activity is counted in [slot, slot + w) for each window w."""

from __future__ import annotations

from stream.core.catalogue import GLOBAL_SCOPE, ActivityLayout
from stream.core.config import KpiSettings
from stream.core.events import ACTIVITY_KINDS, ActivityLogged
from stream.core.periods import PeriodTally
from stream.core.windows import DeltaLedger, Scope

_KIND_INDEX = {kind: index for index, kind in enumerate(ACTIVITY_KINDS)}


class ActivityBook:
    def __init__(self, settings: KpiSettings, ledger: DeltaLedger, layout: ActivityLayout,
                 periods: PeriodTally | None = None, period_layout: ActivityLayout | None = None) -> None:
        self.ledger = ledger
        self.layout = layout
        self.periods = periods  # calendar periods (stream/core/periods.py), None without KPI_PERIODS
        self.period_layout = period_layout
        self.reps: set[str] = set()
        self._slot_us = settings.slot_us
        self._windows = tuple(w // settings.slot_seconds for w in settings.windows_seconds)

    def apply(self, event: ActivityLogged) -> None:
        self.reps.add(event.rep_id)
        slot = event.occurred_us // self._slot_us
        kind = _KIND_INDEX[event.kind]
        deltas = []
        for w_index, width in enumerate(self._windows):
            field_index = self.layout.by_kind[w_index][kind]
            deltas.append((slot, field_index, 1))
            deltas.append((slot + width, field_index, -1))
        self.ledger.add_all((event.rep_id,), deltas)
        if self.periods is not None:
            self.periods.put((event.rep_id,), self.periods.clock.calendar.day_of(event.occurred_us).periods,
                             slot, slot, ((self.period_layout.by_kind[0][kind], 1),))


def activity_cell_scopes(cell: tuple[str]) -> tuple[Scope, ...]:
    return (GLOBAL_SCOPE, ("rep", cell[0]))
