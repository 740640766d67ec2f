"""KPI values from per-scope vectors (spec section 3): the definitions, as arithmetic.

`evaluate_*` turn one scope's summed vector into the published values. Vectors from several
partitions are summed first (every field is additive), so ratios are always computed on totals.

Publication conventions (the oracle follows the same text):
- counts: int; ratios of counts: numerator / denominator (ints), null when the denominator is 0;
- money (sales_amount, average_order_value, avg_deal_size): exact Decimal sums, the value rounded
  half-even to 2 places; a money ratio's numerator is the rounded sum;
- days (avg_open_lead_age_days, avg_sales_cycle_days): numerator = total days, denominator = count;
- pipeline_velocity: exact rational arithmetic of its parts, rounded half-even to cents, no numerator.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from typing import NamedTuple, Sequence

from stream.core.catalogue import ACTIVITY_KIND_LABELS, ActivityLayout, LeadLayout, OutletLayout
from stream.core.config import KpiSettings

US_PER_DAY = 86_400_000_000
US_PER_MINUTE = 60_000_000
_CENT = Decimal("0.01")
_MONEY = Context(prec=200, rounding=ROUND_HALF_EVEN)


class KpiValue(NamedTuple):
    """One published value. A NamedTuple, not a frozen dataclass: a scope evaluates ~40 of them
    per publication, and a frozen dataclass's __init__ (object.__setattr__ per field) takes 1.4 us
    against 0.5 us -- it would be over half of evaluate_outlet_scope."""

    kpi: str
    window: str | None
    scope: str
    scope_id: str
    value: int | float | None
    numerator: int | float | None = None
    denominator: int | float | None = None
    horizon: str | None = None
    kind: str | None = None


def money(amount) -> float:
    return float(Decimal(amount).quantize(_CENT, context=_MONEY))


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _money_mean(total, count: int) -> float | None:
    if not count:
        return None
    return float(_MONEY.divide(Decimal(total), Decimal(count)).quantize(_CENT, context=_MONEY))


def evaluate_outlet_scope(v: Sequence, scope: tuple[str, str], settings: KpiSettings, layout: OutletLayout,
                          previous: Sequence | None = None, labels: tuple[str, ...] | None = None,
                          registered: int | None = None, retention: bool = False) -> list[KpiValue]:
    """The scope's outlet, order and visit KPIs. With `previous`, the vector the scope's values
    were last evaluated from, only the values whose inputs differ from it: the rest are what that
    evaluation gave (an order moves the order and account groups, a visit only its own).
    With `labels`, `v` is a period vector (stream/core/periods.py: one window, published under each
    label): no dormant_accounts, which is rolling only (spec 8); `registered` is then the scope's
    registered outlets at as_of (its rolling vector's: spec 13.1), and `retention` says whether the
    labels have retention values (periods and aliases: yes; lmtd: no)."""
    scope_type, scope_id = scope
    out: list[KpiValue] = []
    rolling = labels is None
    if rolling:
        labels = settings.window_labels
        registered = v[layout.registered]
    ever = v[layout.ever_ordered]
    ever_moved = previous is None or ever != previous[layout.ever_ordered]

    def moved(*slots: int) -> bool:
        return previous is None or any(v[j] != previous[j] for j in slots)

    registered_moved = rolling and moved(layout.registered)
    if registered_moved:
        out.append(KpiValue("registered_outlets", None, scope_type, scope_id, registered))

    for i, window in enumerate(labels):
        if not rolling:
            i = 0
        active = v[layout.active[i]]
        if ever_moved or moved(layout.active[i], layout.reactivated[i]):
            out.append(KpiValue("active_accounts", window, scope_type, scope_id, active))
            if rolling:
                out.append(KpiValue("dormant_accounts", window, scope_type, scope_id, ever - active))
            out.append(KpiValue("reactivated_accounts", window, scope_type, scope_id, v[layout.reactivated[i]]))
        if moved(layout.onboarded[i], *layout.converted[i]):
            onboarded = v[layout.onboarded[i]]
            for h, horizon in enumerate(settings.horizon_labels):
                converted = v[layout.converted[i][h]]
                out.append(KpiValue("first_order_conversion", window, scope_type, scope_id,
                                    _ratio(converted, onboarded), converted, onboarded, horizon=horizon))
        if moved(layout.orders[i], layout.amount[i], layout.lines[i]):
            orders, amount, lines = v[layout.orders[i]], v[layout.amount[i]], v[layout.lines[i]]
            out.append(KpiValue("orders", window, scope_type, scope_id, orders))
            out.append(KpiValue("sales_amount", window, scope_type, scope_id, money(amount)))
            out.append(KpiValue("average_order_value", window, scope_type, scope_id,
                                _money_mean(amount, orders), money(amount), orders))
            out.append(KpiValue("lines_per_order", window, scope_type, scope_id, _ratio(lines, orders), lines, orders))
        if moved(layout.visits[i], layout.productive[i]):
            visits, productive = v[layout.visits[i]], v[layout.productive[i]]
            out.append(KpiValue("visits", window, scope_type, scope_id, visits))
            out.append(KpiValue("productive_visits", window, scope_type, scope_id, productive))
            out.append(KpiValue("visit_to_order_ratio", window, scope_type, scope_id,
                                _ratio(productive, visits), productive, visits))
        out.extend(_field_execution(v, layout, i, window, scope_type, scope_id, registered, moved, registered_moved,
                                    retention and not rolling))
    return out


def _field_execution(v: Sequence, layout: OutletLayout, i: int, window: str, scope_type: str, scope_id: str,
                     registered: int, moved, registered_moved: bool, retention: bool) -> list[KpiValue]:
    """Spec 10's values of window (or period) `i`, those whose inputs moved."""
    out: list[KpiValue] = []
    if moved(layout.planned[i], layout.on_plan[i], layout.unplanned[i]):
        planned, on_plan = v[layout.planned[i]], v[layout.on_plan[i]]
        out.append(KpiValue("planned_calls", window, scope_type, scope_id, planned))
        out.append(KpiValue("calls_on_plan", window, scope_type, scope_id, on_plan))
        out.append(KpiValue("call_compliance", window, scope_type, scope_id, _ratio(on_plan, planned), on_plan, planned))
        out.append(KpiValue("unplanned_visits", window, scope_type, scope_id, v[layout.unplanned[i]]))
    if moved(layout.onboarded[i]):
        out.append(KpiValue("new_outlets", window, scope_type, scope_id, v[layout.onboarded[i]]))
    if registered_moved or moved(layout.visited[i], layout.covered[i], layout.active_registered[i]):
        covered, active = v[layout.covered[i]], v[layout.active_registered[i]]
        out.append(KpiValue("visited_outlets", window, scope_type, scope_id, v[layout.visited[i]]))
        out.append(KpiValue("coverage", window, scope_type, scope_id, _ratio(covered, registered), covered, registered))
        out.append(KpiValue("active_rate", window, scope_type, scope_id, _ratio(active, registered), active, registered))
    if moved(layout.timed[i], layout.visit_us[i]):
        timed, visit_us = v[layout.timed[i]], v[layout.visit_us[i]]
        out.append(KpiValue("avg_visit_minutes", window, scope_type, scope_id,
                            visit_us / (timed * US_PER_MINUTE) if timed else None, visit_us / US_PER_MINUTE, timed))
    if moved(layout.amount[i], layout.returns[i], layout.returned_amount[i]):
        returned = v[layout.returned_amount[i]]
        out.append(KpiValue("returns", window, scope_type, scope_id, v[layout.returns[i]]))
        out.append(KpiValue("returned_amount", window, scope_type, scope_id, money(returned)))
        out.append(KpiValue("net_sales_amount", window, scope_type, scope_id,
                            money(_MONEY.subtract(Decimal(v[layout.amount[i]]), Decimal(returned)))))
    if retention:
        before, retained = v[layout.prev_active[0]], v[layout.retained[0]]
        out.append(KpiValue("retained_accounts", window, scope_type, scope_id, retained))
        out.append(KpiValue("churned_accounts", window, scope_type, scope_id, before - retained))
        out.append(KpiValue("retention_rate", window, scope_type, scope_id, _ratio(retained, before), retained, before))
    return out


def evaluate_lead_scope(v: Sequence, scope: tuple[str, str], settings: KpiSettings, layout: LeadLayout,
                        as_of_us: int) -> list[KpiValue]:
    scope_type, scope_id = scope
    open_leads = v[layout.open]
    age_us = open_leads * as_of_us - v[layout.open_created_us]
    out = [
        KpiValue("open_leads", None, scope_type, scope_id, open_leads),
        KpiValue("avg_open_lead_age_days", None, scope_type, scope_id,
                 age_us / (open_leads * US_PER_DAY) if open_leads else None,
                 age_us / US_PER_DAY, open_leads),
    ]
    out.extend(_lead_window_values(v, scope, layout, enumerate(settings.window_labels), open_leads))
    return out


def evaluate_lead_period(v: Sequence, scope: tuple[str, str], layout: LeadLayout, labels: tuple[str, ...],
                         open_leads: int) -> list[KpiValue]:
    """The windowed lead KPIs of a period vector (one window), under each label; pipeline
    velocity takes the scope's current open leads (`open_leads`), as for rolling windows."""
    return _lead_window_values(v, scope, layout, ((0, label) for label in labels), open_leads)


def _lead_window_values(v: Sequence, scope: tuple[str, str], layout: LeadLayout, windows, open_leads: int) -> list[KpiValue]:
    scope_type, scope_id = scope
    out: list[KpiValue] = []
    for i, window in windows:
        won, lost = v[layout.won[i]], v[layout.lost[i]]
        valued, value_sum, cycle_us = v[layout.valued_wins[i]], v[layout.won_value[i]], v[layout.cycle_us[i]]
        out.append(KpiValue("new_leads", window, scope_type, scope_id, v[layout.created[i]]))
        out.append(KpiValue("win_rate", window, scope_type, scope_id, _ratio(won, won + lost), won, won + lost))
        out.append(KpiValue("avg_deal_size", window, scope_type, scope_id,
                            _money_mean(value_sum, valued), money(value_sum), valued))
        out.append(KpiValue("avg_sales_cycle_days", window, scope_type, scope_id,
                            cycle_us / (won * US_PER_DAY) if won else None, cycle_us / US_PER_DAY, won))
        velocity = None
        if won and valued and cycle_us:
            exact = (Fraction(open_leads) * Fraction(won, won + lost) * (Fraction(Decimal(value_sum)) / valued)
                     / Fraction(cycle_us, won * US_PER_DAY))
            velocity = float(Fraction(round(exact * 100), 100))  # money per day: half-even to cents (spec 13)
        out.append(KpiValue("pipeline_velocity", window, scope_type, scope_id, velocity))
    return out


def evaluate_activity_scope(v: Sequence, scope: tuple[str, str], settings: KpiSettings,
                            layout: ActivityLayout, labels: tuple[str, ...] | None = None) -> list[KpiValue]:
    """With `labels`: a period vector (one window) published under each label."""
    scope_type, scope_id = scope
    out: list[KpiValue] = []
    windows = enumerate(settings.window_labels) if labels is None else ((0, label) for label in labels)
    for i, window in windows:
        counts = [v[index] for index in layout.by_kind[i]]
        for kind, count in zip(ACTIVITY_KIND_LABELS, counts + [sum(counts)]):
            out.append(KpiValue("activities", window, scope_type, scope_id, count, kind=kind))
    return out
