"""Targets and attainment (spec 9): which KPIs take targets, a target's identity, the target of
each identity at the clock, and the values a target publishes against its period's actual.

A target's state is small and bounded: per identity the latest `target.set` at or before the
clock (by occurred_at, ties greater event_id) and those still ahead of it (at most the future
tolerance ahead). Identities of periods older than the oldest published one are dropped when the
clock crosses a boundary; identities of future periods wait, publishing nothing, until theirs is
published. The actual a target is measured against is the scope's period value of the KPI, read
from the same period sums the period values come from (stream/core/period_views.py), so
attainment is exact and computed from unrounded numbers.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Sequence

from stream.core.catalogue import ACTIVITY_KIND_LABELS, SCOPE_TYPES, escape_segment
from stream.core.kpis import KpiValue, money
from stream.core.windows import Scope

# targetable KPI (spec 9) -> the family whose period sums hold its actual
TARGETABLE: dict[str, str] = {
    "active_accounts": "outlet", "reactivated_accounts": "outlet", "orders": "outlet", "sales_amount": "outlet",
    "net_sales_amount": "outlet", "visits": "outlet", "productive_visits": "outlet", "new_outlets": "outlet",
    "visited_outlets": "outlet", "calls_on_plan": "outlet", "new_leads": "lead", "activities": "activity",
}
# distinct counts: no projection (spec 9)
NOT_PROJECTED = frozenset({"active_accounts", "reactivated_accounts", "visited_outlets"})
MONEY_KPIS = frozenset({"sales_amount", "net_sales_amount"})
# the scope types each family's KPIs have (spec 2)
FAMILY_SCOPES: dict[str, tuple[str, ...]] = {
    "outlet": SCOPE_TYPES, "lead": ("global", "rep", "region"), "activity": ("global", "rep"),
}
TARGET_SUFFIXES = ("_target", "_attainment", "_projected", "_projected_attainment")
TARGET_KPIS = tuple(kpi + suffix for kpi in TARGETABLE for suffix in TARGET_SUFFIXES
                    if kpi not in NOT_PROJECTED or suffix in ("_target", "_attainment"))


def target_identity(kpi: str, period: str, scope: str, scope_id: str, kind: str | None) -> str:
    """The identity (and the topic key) of a target: `{kpi}|{period}|{scope}|{scope_id}`, plus
    `|{kind}` for activities, each segment escaped as in spec 5.1."""
    parts = [kpi, period, scope, scope_id] + ([kind] if kind is not None else [])
    return "|".join(escape_segment(part) for part in parts)


def actual_of(kpi: str, layout, vector: Sequence, kind: str | None) -> int | Decimal:
    """The exact value of targetable `kpi` in a one-window period vector of its family."""
    if kpi == "activities":
        counts = [vector[index] for index in layout.by_kind[0]]
        return sum(counts) if kind == "all" else counts[ACTIVITY_KIND_LABELS.index(kind)]
    if kpi == "net_sales_amount":  # exact sales minus exact returns (spec 13.1)
        return Decimal(vector[layout.amount[0]]) - Decimal(vector[layout.returned_amount[0]])
    field_name = {"active_accounts": "active", "reactivated_accounts": "reactivated", "orders": "orders",
                  "sales_amount": "amount", "visits": "visits", "productive_visits": "productive",
                  "new_outlets": "onboarded", "visited_outlets": "visited", "calls_on_plan": "on_plan",
                  "new_leads": "created"}[kpi]
    return vector[getattr(layout, field_name)[0]]


def _published_number(kpi: str, number: Decimal | int | Fraction) -> int | float:
    """A target, actual or projection as published: money half-even to cents, counts as they
    are (an integral count as an int)."""
    if kpi in MONEY_KPIS:
        return money(number if not isinstance(number, Fraction) else Decimal(number.numerator) / number.denominator)
    if isinstance(number, int) or (isinstance(number, Decimal) and number == number.to_integral_value()):
        return int(number)
    return float(number)


def _ratio(numerator: Fraction, target: Decimal) -> float | None:
    return float(numerator / Fraction(target)) if target else None


def target_values(kpi: str, kind: str | None, labels: tuple[str, ...], scope: Scope, actual: int | Decimal,
                  target: Decimal | None, start_us: int, end_us: int, as_of_us: int, slot_us: int) -> list[KpiValue]:
    """The values one target publishes under each label (its designator, and its alias when
    the period is current). `target` None: a removed target, its keys published as null."""
    scope_type, scope_id = scope
    projected_kpi = kpi not in NOT_PROJECTED
    out: list[KpiValue] = []
    if target is None:
        for label in labels:
            out.append(KpiValue(kpi + "_target", label, scope_type, scope_id, None, kind=kind))
            out.append(KpiValue(kpi + "_attainment", label, scope_type, scope_id, None, kind=kind))
            if projected_kpi:
                out.append(KpiValue(kpi + "_projected", label, scope_type, scope_id, None, kind=kind))
                out.append(KpiValue(kpi + "_projected_attainment", label, scope_type, scope_id, None, kind=kind))
        return out
    exact_actual = Fraction(actual)
    published_target = _published_number(kpi, target)
    published_actual = _published_number(kpi, actual)
    attainment = _ratio(exact_actual, target)
    projection = None
    if projected_kpi:
        elapsed = min(end_us, (as_of_us // slot_us + 1) * slot_us) - start_us
        projection = exact_actual * Fraction(end_us - start_us, elapsed)
    for label in labels:
        out.append(KpiValue(kpi + "_target", label, scope_type, scope_id, published_target, kind=kind))
        out.append(KpiValue(kpi + "_attainment", label, scope_type, scope_id, attainment,
                            published_actual, published_target, kind=kind))
        if projection is not None:
            published_projection = _published_number(kpi, projection)
            out.append(KpiValue(kpi + "_projected", label, scope_type, scope_id, published_projection, kind=kind))
            out.append(KpiValue(kpi + "_projected_attainment", label, scope_type, scope_id,
                                _ratio(projection, target), published_projection, published_target, kind=kind))
    return out


# -- state --------------------------------------------------------------------------------------

Setting = tuple[int, str, Decimal | None]  # (occurred_us, event_id, value): ordered as spec 9 orders sets


@dataclass(slots=True)
class TargetState:
    kpi: str
    kind: str | None
    family: str
    scope: Scope
    position: int  # the period kind's position in KPI_PERIODS
    index: int  # the period's index
    current: Setting | None = None  # the latest set at or before the clock
    ahead: list[Setting] = field(default_factory=list)  # sets in slots after the clock's


# what a scope's targets are sent and read as: (kpi, kind, kind position, period index, value)
ResolvedTarget = tuple[str, str | None, int, int, Decimal | None]


class TargetBook:
    """Every identity's target at the clock, and which (family, scope) pairs' targets moved."""

    def __init__(self, kinds: tuple[str, ...], slot_us: int, now_us: int) -> None:
        self.kinds = kinds
        self.slot_us = slot_us
        self.slot = now_us // slot_us
        self.targets: dict[str, TargetState] = {}
        self.by_scope: dict[tuple[str, Scope], set[str]] = {}
        self.dirty: set[tuple[str, Scope]] = set()
        self._ahead: list[tuple[int, str]] = []  # (slot, identity) of sets still ahead of the clock

    def __len__(self) -> int:
        return len(self.targets)

    def apply(self, identity: str, kpi: str, kind: str | None, scope: Scope, period_kind: str, index: int,
              setting: Setting, oldest: Sequence[int]) -> None:
        """Keep a `target.set`; `oldest`: per kind position the oldest published period index
        (an older period's target never publishes again and is not kept)."""
        position = self.kinds.index(period_kind)
        if index < oldest[position]:
            return
        state = self.targets.get(identity)
        if state is None:
            family = TARGETABLE[kpi]
            state = self.targets[identity] = TargetState(kpi, kind, family, scope, position, index)
            self.by_scope.setdefault((family, scope), set()).add(identity)
        slot = setting[0] // self.slot_us
        if slot > self.slot:
            state.ahead.append(setting)
            heapq.heappush(self._ahead, (slot, identity))
        elif state.current is None or setting[:2] > state.current[:2]:
            state.current = setting
            self.dirty.add((state.family, scope))

    def advance(self, now_us: int) -> None:
        slot = now_us // self.slot_us
        if slot <= self.slot:
            return
        self.slot = slot
        ahead = self._ahead
        while ahead and ahead[0][0] <= slot:
            _, identity = heapq.heappop(ahead)
            state = self.targets.get(identity)
            if state is None:
                continue
            due = [s for s in state.ahead if s[0] // self.slot_us <= slot]
            state.ahead = [s for s in state.ahead if s[0] // self.slot_us > slot]
            for setting in due:
                if state.current is None or setting[:2] > state.current[:2]:
                    state.current = setting
                    self.dirty.add((state.family, state.scope))

    def crossed(self, oldest: Sequence[int]) -> None:
        """A period boundary passed: targets of periods older than the oldest published are
        dropped; every scope with targets is dirty (a future period may be published now, and
        aliases moved)."""
        for identity in [i for i, state in self.targets.items() if state.index < oldest[state.position]]:
            state = self.targets.pop(identity)
            identities = self.by_scope.get((state.family, state.scope))
            if identities is not None:
                identities.discard(identity)
                if not identities:
                    del self.by_scope[(state.family, state.scope)]
            self.dirty.add((state.family, state.scope))
        self.dirty.update(self.by_scope)

    def mark_all_dirty(self) -> None:
        self.dirty.update(self.by_scope)

    def take_dirty(self) -> set[tuple[str, Scope]]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def resolved(self, family: str, scope: Scope) -> list[ResolvedTarget]:
        """The scope's targets of `family`'s KPIs that have a set at or before the clock (a
        removed one with value None), whatever their period; readers keep the published ones."""
        out = []
        for identity in self.by_scope.get((family, scope), ()):
            state = self.targets[identity]
            if state.current is not None:
                out.append((state.kpi, state.kind, state.position, state.index, state.current[2]))
        out.sort(key=lambda target: (target[0], target[1] or "", target[2], target[3]))
        return out
