"""The KPI catalogue: names, scopes and keys of spec sections 2, 3 and 5.1, and the field layout
of the per-scope vectors each family of KPIs is computed from."""

from __future__ import annotations

from dataclasses import dataclass

from stream.core.config import KpiSettings

SCOPE_TYPES = ("global", "region", "territory", "distributor", "channel", "rep")
GLOBAL_SCOPE = ("global", "all")
ACTIVITY_KIND_LABELS = ("call", "email", "meeting", "demo", "all")

OUTLET_KPIS = ("active_accounts", "dormant_accounts", "reactivated_accounts", "first_order_conversion")
ORDER_KPIS = ("orders", "sales_amount", "average_order_value", "lines_per_order")
VISIT_KPIS = ("visits", "productive_visits", "visit_to_order_ratio")
LEAD_KPIS = (
    "new_leads", "open_leads", "avg_open_lead_age_days", "win_rate", "avg_deal_size",
    "avg_sales_cycle_days", "pipeline_velocity",
)
ACTIVITY_KPIS = ("activities",)
# Field execution (spec 10): plans, outlet universe, time in market, returns, retention
PLAN_KPIS = ("planned_calls", "calls_on_plan", "call_compliance", "unplanned_visits")
UNIVERSE_KPIS = ("registered_outlets", "new_outlets", "visited_outlets", "coverage", "active_rate")
TIME_KPIS = ("avg_visit_minutes",)
RETURN_KPIS = ("returns", "returned_amount", "net_sales_amount")
RETENTION_KPIS = ("retained_accounts", "churned_accounts", "retention_rate")
FIELD_KPIS = PLAN_KPIS + UNIVERSE_KPIS + TIME_KPIS + RETURN_KPIS + RETENTION_KPIS
ALL_KPIS = OUTLET_KPIS + ORDER_KPIS + VISIT_KPIS + LEAD_KPIS + ACTIVITY_KPIS + FIELD_KPIS
UNWINDOWED_KPIS = ("open_leads", "avg_open_lead_age_days", "registered_outlets")
# Windowed KPIs that have no period values (spec 8: dormant_accounts is rolling only)
ROLLING_ONLY_KPIS = ("dormant_accounts",)
# KPIs with period and alias values only: no rolling window, no lmtd (spec 10.5)
PERIOD_ONLY_KPIS = RETENTION_KPIS
RATIO_KPIS = (
    "first_order_conversion", "average_order_value", "lines_per_order", "visit_to_order_ratio",
    "avg_open_lead_age_days", "win_rate", "avg_deal_size", "avg_sales_cycle_days",
    "call_compliance", "coverage", "active_rate", "avg_visit_minutes", "retention_rate",
)


def escape_segment(text: str) -> str:
    return text.replace("%", "%25").replace("|", "%7C")


def kpi_key(kpi: str, window: str | None, scope: str, scope_id: str, extra: str | None = None) -> str:
    """`{kpi}|{window}|{scope}|{scope_id}` plus `|{horizon}` or `|{kind}` (spec 5.1)."""
    key = f"{kpi}|{window or '-'}|{scope}|{escape_segment(scope_id)}"
    return key if extra is None else f"{key}|{extra}"


class _Allocator:
    def __init__(self) -> None:
        self.size = 0

    def take(self, count: int) -> tuple[int, ...]:
        start, self.size = self.size, self.size + count
        return tuple(range(start, start + count))


@dataclass(frozen=True, slots=True)
class OutletLayout:
    """Outlet, order and visit KPIs share one vector per scope; tuples are indexed by window."""

    active: tuple[int, ...]
    reactivated: tuple[int, ...]
    onboarded: tuple[int, ...]
    converted: tuple[tuple[int, ...], ...]  # [window][horizon]
    orders: tuple[int, ...]
    amount: tuple[int, ...]
    lines: tuple[int, ...]
    visits: tuple[int, ...]
    productive: tuple[int, ...]
    ever_ordered: int
    # field execution (spec 10), per window
    planned: tuple[int, ...]  # planned (not cancelled) calls
    on_plan: tuple[int, ...]  # those visited on their date by their rep
    unplanned: tuple[int, ...]  # visits with no planned call for outlet, rep and local date
    visited: tuple[int, ...]  # distinct outlets with a visit
    covered: tuple[int, ...]  # registered outlets with a visit
    active_registered: tuple[int, ...]  # registered outlets with an order
    timed: tuple[int, ...]  # visits with a check-in and a check-out not before it
    visit_us: tuple[int, ...]  # their time in market, microseconds
    returns: tuple[int, ...]
    returned_amount: tuple[int, ...]
    # retention (spec 10.5), period vectors only (empty in rolling ones): outlets with an order in
    # the period before, and those of them with an order in the period
    prev_active: tuple[int, ...]
    retained: tuple[int, ...]
    registered: int  # no window: outlets onboarded at or before as_of
    size: int

    @classmethod
    def build(cls, settings: KpiSettings, windows: int | None = None, periods: bool = False) -> "OutletLayout":
        """`windows`: how many windows the vector holds (default: KPI_WINDOWS'); a period vector
        (`periods`) holds one (stream/core/periods.py) and the retention fields."""
        n = len(settings.windows_seconds) if windows is None else windows
        h = len(settings.conversion_horizons_seconds)
        alloc = _Allocator()
        fields = dict(
            active=alloc.take(n), reactivated=alloc.take(n), onboarded=alloc.take(n),
            converted=tuple(alloc.take(h) for _ in range(n)),
            orders=alloc.take(n), amount=alloc.take(n), lines=alloc.take(n),
            visits=alloc.take(n), productive=alloc.take(n), ever_ordered=alloc.take(1)[0],
            planned=alloc.take(n), on_plan=alloc.take(n), unplanned=alloc.take(n), visited=alloc.take(n),
            covered=alloc.take(n), active_registered=alloc.take(n), timed=alloc.take(n), visit_us=alloc.take(n),
            returns=alloc.take(n), returned_amount=alloc.take(n),
            prev_active=alloc.take(1 if periods else 0), retained=alloc.take(1 if periods else 0),
            registered=alloc.take(1)[0],
        )
        return cls(size=alloc.size, **fields)


@dataclass(frozen=True, slots=True)
class LeadLayout:
    created: tuple[int, ...]
    won: tuple[int, ...]
    lost: tuple[int, ...]
    valued_wins: tuple[int, ...]
    won_value: tuple[int, ...]
    cycle_us: tuple[int, ...]
    open: int
    open_created_us: int
    size: int

    @classmethod
    def build(cls, settings: KpiSettings, windows: int | None = None) -> "LeadLayout":
        n = len(settings.windows_seconds) if windows is None else windows
        alloc = _Allocator()
        fields = dict(
            created=alloc.take(n), won=alloc.take(n), lost=alloc.take(n), valued_wins=alloc.take(n),
            won_value=alloc.take(n), cycle_us=alloc.take(n), open=alloc.take(1)[0],
            open_created_us=alloc.take(1)[0],
        )
        return cls(size=alloc.size, **fields)


@dataclass(frozen=True, slots=True)
class ActivityLayout:
    by_kind: tuple[tuple[int, ...], ...]  # [window][kind index in ACTIVITY_KINDS]
    size: int

    @classmethod
    def build(cls, settings: KpiSettings, kinds: int = 4, windows: int | None = None) -> "ActivityLayout":
        alloc = _Allocator()
        n = len(settings.windows_seconds) if windows is None else windows
        by_kind = tuple(alloc.take(kinds) for _ in range(n))
        return cls(by_kind=by_kind, size=alloc.size)
