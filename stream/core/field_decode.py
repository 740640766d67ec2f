"""Decoding the field-execution events of spec 10 (visit.planned, order.cancelled,
order.returned): the builders stream/core/decode.py dispatches to by `type`.

Fields are checked in the order spec 10 lists them, with decode.py's helpers, so a fault has the
same reason as anywhere else. Readings of spec 13.1: a `plan_date` that is not a string is
`bad_type`, one that is not a valid zero-padded `YYYY-MM-DD` date is `bad_value`; an unknown plan
`status` is `bad_value`. A returned order's currency must be the base one (`currency_mismatch`,
checked by decode.py after every field, as for order.placed).
"""

from __future__ import annotations

import re
from datetime import date

from stream.core import decode as base
from stream.core.events import PLAN_STATUSES, OrderCancelled, OrderReturned, VisitPlanned

# types whose `currency` must be the base currency (decode.py checks, after the type's fields)
MONEY_TYPES = frozenset(("order.placed", "order.returned"))
_PLAN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def plan_date_field(doc: dict) -> str:
    value = base._field(doc, "plan_date", True)
    if not isinstance(value, str):
        raise base.Rejected("bad_type", f"field 'plan_date' must be a string, got {type(value).__name__}")
    if not _PLAN_DATE.fullmatch(value) or not _valid_date(value):
        raise base.Rejected("bad_value", f"field 'plan_date' must be a date like 2026-11-23, got {base._show(value)}")
    return value


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _planned(doc, event_type, event_id, occurred_us, ref_us) -> VisitPlanned:
    outlet_id = base._string(doc, "outlet_id")
    rep_id = base._string(doc, "rep_id")
    plan_date = plan_date_field(doc)
    status = base._string(doc, "status", False)
    if status is not None and status not in PLAN_STATUSES:
        raise base.Rejected("bad_value", f"field 'status' must be one of {', '.join(PLAN_STATUSES)}, got {base._show(status)}")
    return VisitPlanned(event_id, occurred_us, ref_us, outlet_id, rep_id, plan_date, status != "cancelled")


def _cancelled(doc, event_type, event_id, occurred_us, ref_us) -> OrderCancelled:
    outlet_id = base._string(doc, "outlet_id")
    order_id = base._string(doc, "order_id")
    reason = base._string(doc, "reason", False)
    return OrderCancelled(event_id, occurred_us, ref_us, outlet_id, order_id, reason)


def _returned(doc, event_type, event_id, occurred_us, ref_us) -> OrderReturned:
    outlet_id = base._string(doc, "outlet_id")
    order_id = base._string(doc, "order_id")
    amount = base._amount(doc)
    currency = base._currency(doc)
    rep_id = base._string(doc, "rep_id", False)
    return OrderReturned(event_id, occurred_us, ref_us, outlet_id, order_id, amount, currency, rep_id)


BUILDERS = {"visit.planned": _planned, "order.cancelled": _cancelled, "order.returned": _returned}
