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
ALL_KPIS = OUTLET_KPIS + ORDER_KPIS + VISIT_KPIS + LEAD_KPIS + ACTIVITY_KPIS
UNWINDOWED_KPIS = ("open_leads", "avg_open_lead_age_days")
# Windowed KPIs that have no period values (spec 8: dormant_accounts is rolling only)
ROLLING_ONLY_KPIS = ("dormant_accounts",)
RATIO_KPIS = (
    "first_order_conversion", "average_order_value", "lines_per_order", "visit_to_order_ratio",
    "avg_open_lead_age_days", "win_rate", "avg_deal_size", "avg_sales_cycle_days",
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
    size: int

    @classmethod
    def build(cls, settings: KpiSettings, windows: int | None = None) -> "OutletLayout":
        """`windows`: how many windows the vector holds (default: KPI_WINDOWS'); a period vector
        holds one (stream/core/periods.py)."""
        n = len(settings.windows_seconds) if windows is None else windows
        h = len(settings.conversion_horizons_seconds)
        alloc = _Allocator()
        fields = dict(
            active=alloc.take(n), reactivated=alloc.take(n), onboarded=alloc.take(n),
            converted=tuple(alloc.take(h) for _ in range(n)),
            orders=alloc.take(n), amount=alloc.take(n), lines=alloc.take(n),
            visits=alloc.take(n), productive=alloc.take(n), ever_ordered=alloc.take(1)[0],
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
