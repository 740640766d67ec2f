"""Decoded input events: the contract of spec section 1 after validation.

Times are integer microseconds since the Unix epoch (`*_us`); amounts and lead values are exact
`Decimal`s. Every event also carries `ref_us`, the reference instant it was judged against
(pinned clock, Kafka timestamp, or processor clock: spec section 4), which dedupe uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Union

OUTLET_TYPES = ("outlet.onboarded", "outlet.updated")
LEAD_TYPES = ("lead.created", "lead.updated", "lead.won", "lead.lost")
ACTIVITY_KINDS = ("call", "email", "meeting", "demo")
EVENT_TYPES = OUTLET_TYPES + ("order.placed", "visit.completed") + LEAD_TYPES + ("activity.logged", "target.set")
# Field execution (spec 10): journey plans, order cancellations and returns
FIELD_TYPES = ("visit.planned", "order.cancelled", "order.returned")
EVENT_TYPES += FIELD_TYPES
PLAN_STATUSES = ("planned", "cancelled")

# Outlet attribute order, used wherever attributes are held as a tuple.
OUTLET_ATTRIBUTES = ("region", "territory", "distributor_id", "channel", "rep_id")
UNASSIGNED = "unassigned"


@dataclass(frozen=True, slots=True)
class OutletEvent:
    event_id: str
    type: str  # outlet.onboarded | outlet.updated
    occurred_us: int
    ref_us: int
    outlet_id: str
    # region, territory, distributor_id, channel, rep_id; None = absent or null
    attributes: tuple[str | None, str | None, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    event_id: str
    occurred_us: int
    ref_us: int
    outlet_id: str
    order_id: str
    amount: Decimal
    currency: str
    lines: int
    rep_id: str | None
    visit_id: str | None
    type: str = "order.placed"


@dataclass(frozen=True, slots=True)
class VisitCompleted:
    event_id: str
    occurred_us: int
    ref_us: int
    outlet_id: str
    visit_id: str
    rep_id: str
    checked_in_us: int | None
    checked_out_us: int | None
    type: str = "visit.completed"


@dataclass(frozen=True, slots=True)
class LeadEvent:
    event_id: str
    type: str  # lead.created | lead.updated | lead.won | lead.lost
    occurred_us: int
    ref_us: int
    lead_id: str
    rep_id: str | None
    value: Decimal | None
    stage: str | None
    region: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class ActivityLogged:
    event_id: str
    occurred_us: int
    ref_us: int
    rep_id: str
    kind: str
    lead_id: str | None
    outlet_id: str | None
    type: str = "activity.logged"


@dataclass(frozen=True, slots=True)
class TargetSet:
    """A target for one identity (spec 9): `kpi` for `period` at (`scope`, `scope_id`), `kind` for
    activities (a kind or `all`; None for other KPIs). `value` None removes the target."""

    event_id: str
    occurred_us: int
    ref_us: int
    kpi: str
    period: str  # the designator as sent, e.g. 2026-11
    period_kind: str
    period_index: int  # stream/core/calendar.py index_of_date numbering
    scope: str
    scope_id: str
    kind: str | None
    value: Decimal | None
    identity: str  # the topic key: `{kpi}|{period}|{scope}|{scope_id}` (+ `|{kind}`), escaped as spec 5.1
    type: str = "target.set"


@dataclass(frozen=True, slots=True)
class VisitPlanned:
    """A planned call (spec 10.1): identified by (outlet_id, rep_id, plan_date); `plan_date` is a
    local date in the business time zone, kept as its ISO text."""

    event_id: str
    occurred_us: int
    ref_us: int
    outlet_id: str
    rep_id: str
    plan_date: str
    planned: bool  # False: status `cancelled`
    type: str = "visit.planned"


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    event_id: str
    occurred_us: int
    ref_us: int
    outlet_id: str
    order_id: str
    reason: str | None
    type: str = "order.cancelled"


@dataclass(frozen=True, slots=True)
class OrderReturned:
    event_id: str
    occurred_us: int
    ref_us: int
    outlet_id: str
    order_id: str
    amount: Decimal
    currency: str
    rep_id: str | None
    type: str = "order.returned"


Event = Union[OutletEvent, OrderPlaced, VisitCompleted, LeadEvent, ActivityLogged, TargetSet, VisitPlanned,
              OrderCancelled, OrderReturned]


def partition_key(event: Event) -> str:
    """The key that places an event's state: outlet_id, lead_id or rep_id (spec section 1)."""
    if isinstance(event, LeadEvent):
        return event.lead_id
    if isinstance(event, ActivityLogged):
        return event.rep_id
    if isinstance(event, TargetSet):
        return event.identity
    return event.outlet_id
