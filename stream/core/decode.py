"""Input bytes -> a validated event (stream/core/events.py), or `Rejected` with a spec reason.

Checks run in the order of spec section 4, and the first fault met is the reason: size;
JSON (also non-UTF-8 bytes); not an object; `type`; `event_id`; `occurred_at`; the type's own
fields in the order section 1 lists them; `currency_mismatch`; last `future_event`.

Where the spec is silent (the JSON Schemas in schemas/ say the same):
- optional fields may be absent or null; a present optional string must be non-empty;
- required ids are non-empty strings; `event_id` is at most 128 characters;
- `lines` is an integer >= 1 (2.0 counts as the integer 2, as JSON Schema reads it);
- `amount` is a JSON number >= 0 or a plain decimal string (`12.50`); a lead `value` is a number;
  a JSON number means the decimal it spells (1.015 is 1.015, not the nearest double);
- `rep_id`/`region` on lead.won / lead.lost are extra fields, ignored;
- timestamps follow RFC 3339 strictly (see timeparse.py).
"""

from __future__ import annotations

import base64
import re
from decimal import Decimal

import orjson

from stream.core.config import KpiSettings
from stream.core.calendar import parse_designator
from stream.core.events import (
    ACTIVITY_KINDS, ActivityLogged, Event, LeadEvent, OrderPlaced, OutletEvent, TargetSet, VisitCompleted,
)
from stream.core.targets import FAMILY_SCOPES, TARGETABLE, target_identity
from stream.core.timeparse import parse_rfc3339_us
from stream.core import field_decode

REJECT_REASONS = (
    "oversized", "malformed_json", "not_an_object", "unknown_type", "missing_field", "bad_type",
    "bad_value", "bad_timestamp", "future_event", "currency_mismatch",
)
_DECIMAL_STRING = re.compile(r"[0-9]+(\.[0-9]+)?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_MISSING = object()


class Rejected(Exception):
    """An input event that cannot be applied: `reason` is machine-readable, `detail` for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _field(doc: dict, name: str, required: bool):
    value = doc.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise Rejected("missing_field", f"field '{name}' is required")
        return None
    return value


def _string(doc: dict, name: str, required: bool = True) -> str | None:
    value = doc.get(name)
    if value.__class__ is str and value:  # the common case first: ~5 strings per event
        return value
    value = _field(doc, name, required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected("bad_type", f"field '{name}' must be a string, got {type(value).__name__}")
    if not value:
        raise Rejected("bad_value", f"field '{name}' must not be empty")
    return value


def _timestamp(doc: dict, name: str, required: bool) -> int | None:
    value = doc.get(name)
    if value.__class__ is not str:
        value = _field(doc, name, required)
        if value is None:
            return None
        raise Rejected("bad_type", f"field '{name}' must be an RFC 3339 string, got {type(value).__name__}")
    parsed = parse_rfc3339_us(value)
    if parsed is None:
        raise Rejected("bad_timestamp", f"field '{name}' is not an RFC 3339 date-time with offset: {_show(value)}")
    return parsed


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _decimal_number(value: int | float) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _amount(doc: dict) -> Decimal:
    return _non_negative_decimal("amount", _field(doc, "amount", True))


def _non_negative_decimal(name: str, value: object) -> Decimal:
    """A present money-like value: a JSON number >= 0 or a plain decimal string (`12.50`)."""
    if isinstance(value, str):
        if not _DECIMAL_STRING.fullmatch(value):
            raise Rejected("bad_value", f"field '{name}' must be a decimal like 12.50, got {_show(value)}")
        return Decimal(value)
    if not _number(value):
        raise Rejected("bad_type", f"field '{name}' must be a number or decimal string, got {type(value).__name__}")
    if value < 0:
        raise Rejected("bad_value", f"field '{name}' must be >= 0, got {_show(value)}")
    return _decimal_number(value)


def _lead_value(doc: dict) -> Decimal | None:
    value = _field(doc, "value", False)
    if value is None:
        return None
    if not _number(value):
        raise Rejected("bad_type", f"field 'value' must be a number, got {type(value).__name__}")
    if value < 0:
        raise Rejected("bad_value", f"field 'value' must be >= 0, got {_show(value)}")
    return _decimal_number(value)


def _lines(doc: dict) -> int:
    value = _field(doc, "lines", True)
    if not _number(value) or (isinstance(value, float) and not value.is_integer()):
        raise Rejected("bad_type", f"field 'lines' must be an integer, got {_show(value)}")
    if value < 1:
        raise Rejected("bad_value", f"field 'lines' must be >= 1, got {_show(value)}")
    return int(value)


def _currency(doc: dict) -> str:
    value = _string(doc, "currency")
    if not _CURRENCY.fullmatch(value):
        raise Rejected("bad_value", f"field 'currency' must be an ISO 4217 code like USD, got {_show(value)}")
    return value


def decode_event(raw: bytes, reference_us: int, settings: KpiSettings) -> Event:
    if len(raw) > settings.max_event_bytes:
        raise Rejected("oversized", f"{len(raw)} bytes is over the {settings.max_event_bytes}-byte limit")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise Rejected("malformed_json", f"not UTF-8 JSON: {str(error)[:120]}") from None
    if not isinstance(doc, dict):
        raise Rejected("not_an_object", f"the event must be a JSON object, got {type(doc).__name__}")
    event_type = doc.get("type", _MISSING)
    if event_type is _MISSING or event_type is None:
        raise Rejected("missing_field", "field 'type' is required")
    if not isinstance(event_type, str):
        raise Rejected("bad_type", f"field 'type' must be a string, got {type(event_type).__name__}")
    builder = _BUILDERS.get(event_type)
    if builder is None:
        raise Rejected("unknown_type", f"unknown event type {_show(event_type)}")
    event_id = _string(doc, "event_id")
    if len(event_id) > 128:
        raise Rejected("bad_value", f"field 'event_id' must be at most 128 characters, got {len(event_id)}")
    occurred_us = _timestamp(doc, "occurred_at", True)
    if builder is _target:
        event = _target(doc, event_id, occurred_us, reference_us, settings.periods)
    else:
        event = builder(doc, event_type, event_id, occurred_us, reference_us)
    if event_type in field_decode.MONEY_TYPES and event.currency != settings.base_currency:
        raise Rejected("currency_mismatch", f"currency {event.currency} is not the base currency {settings.base_currency}")
    if occurred_us - reference_us > settings.future_tolerance_seconds * 1_000_000:
        raise Rejected("future_event", f"occurred_at is more than {settings.future_tolerance_seconds}s ahead of the reference instant")
    return event


def _outlet(doc, event_type, event_id, occurred_us, ref_us) -> OutletEvent:
    outlet_id = _string(doc, "outlet_id")
    attributes = (_string(doc, "region", False), _string(doc, "territory", False),
                  _string(doc, "distributor_id", False), _string(doc, "channel", False), _string(doc, "rep_id", False))
    return OutletEvent(event_id, event_type, occurred_us, ref_us, outlet_id, attributes)


def _order(doc, event_type, event_id, occurred_us, ref_us) -> OrderPlaced:
    outlet_id = _string(doc, "outlet_id")
    order_id = _string(doc, "order_id")
    amount = _amount(doc)
    currency = _currency(doc)
    lines = _lines(doc)
    rep_id = _string(doc, "rep_id", False)
    visit_id = _string(doc, "visit_id", False)
    return OrderPlaced(event_id, occurred_us, ref_us, outlet_id, order_id, amount, currency, lines, rep_id, visit_id)


def _visit(doc, event_type, event_id, occurred_us, ref_us) -> VisitCompleted:
    outlet_id = _string(doc, "outlet_id")
    visit_id = _string(doc, "visit_id")
    rep_id = _string(doc, "rep_id")
    checked_in = _timestamp(doc, "checked_in_at", False)
    checked_out = _timestamp(doc, "checked_out_at", False)
    return VisitCompleted(event_id, occurred_us, ref_us, outlet_id, visit_id, rep_id, checked_in, checked_out)


def _lead(doc, event_type, event_id, occurred_us, ref_us) -> LeadEvent:
    lead_id = _string(doc, "lead_id")
    rep_id = value = stage = region = reason = None
    if event_type == "lead.created":
        rep_id = _string(doc, "rep_id")
        value = _lead_value(doc)
        region = _string(doc, "region", False)
    elif event_type == "lead.updated":
        rep_id = _string(doc, "rep_id", False)
        value = _lead_value(doc)
        stage = _string(doc, "stage", False)
        region = _string(doc, "region", False)
    elif event_type == "lead.won":
        value = _lead_value(doc)
    else:
        reason = _string(doc, "reason", False)
    return LeadEvent(event_id, event_type, occurred_us, ref_us, lead_id, rep_id, value, stage, region, reason)


def _activity(doc, event_type, event_id, occurred_us, ref_us) -> ActivityLogged:
    rep_id = _string(doc, "rep_id")
    kind = _string(doc, "kind")
    if kind not in ACTIVITY_KINDS:
        raise Rejected("bad_value", f"field 'kind' must be one of {', '.join(ACTIVITY_KINDS)}, got {_show(kind)}")
    lead_id = _string(doc, "lead_id", False)
    outlet_id = _string(doc, "outlet_id", False)
    return ActivityLogged(event_id, occurred_us, ref_us, rep_id, kind, lead_id, outlet_id)


def _target(doc, event_id, occurred_us, ref_us, periods: tuple[str, ...]) -> TargetSet:
    kpi = _string(doc, "kpi")
    if kpi not in TARGETABLE:
        raise Rejected("bad_value", f"field 'kpi' must be a targetable KPI ({', '.join(TARGETABLE)}), got {_show(kpi)}")
    period = _string(doc, "period")
    parsed = parse_designator(period)
    if parsed is None:
        raise Rejected("bad_value", f"field 'period' must be a period designator like 2026-11, 2026-W48 or 2026-Q4, "
                                    f"got {_show(period)}")
    if parsed[0] not in periods:
        raise Rejected("bad_value", f"field 'period' is a {parsed[0]}, not one of the configured KPI_PERIODS "
                                    f"({', '.join(periods) or 'none'})")
    scope = _string(doc, "scope")
    family = TARGETABLE[kpi]
    if scope not in FAMILY_SCOPES[family]:
        raise Rejected("bad_value", f"field 'scope' must be one of {', '.join(FAMILY_SCOPES[family])} for {kpi}, "
                                    f"got {_show(scope)}")
    scope_id = _string(doc, "scope_id")
    kind = _string(doc, "kind", False)
    if kpi == "activities":
        kind = kind or "all"
        if kind != "all" and kind not in ACTIVITY_KINDS:
            raise Rejected("bad_value", f"field 'kind' must be one of {', '.join(ACTIVITY_KINDS)} or all, got {_show(kind)}")
    elif kind is not None:
        raise Rejected("bad_value", f"field 'kind' applies to activities targets only, not {kpi}")
    value = _target_value(doc)
    return TargetSet(event_id, occurred_us, ref_us, kpi, period, parsed[0], parsed[1], scope, scope_id, kind, value,
                     target_identity(kpi, period, scope, scope_id, kind))


def _target_value(doc: dict) -> Decimal | None:
    """A target's `value`: absent is missing (only an explicit null removes a target, spec 13.1)."""
    if "value" not in doc:
        raise Rejected("missing_field", "field 'value' is required (null removes the target)")
    return None if doc["value"] is None else _non_negative_decimal("value", doc["value"])


_BUILDERS = {
    "outlet.onboarded": _outlet, "outlet.updated": _outlet, "order.placed": _order,
    "visit.completed": _visit, "lead.created": _lead, "lead.updated": _lead, "lead.won": _lead,
    "lead.lost": _lead, "activity.logged": _activity, "target.set": _target,
}
_BUILDERS.update(field_decode.BUILDERS)  # spec 10: visit.planned, order.cancelled, order.returned


def rejection_record(raw: bytes, reason: str, detail: str, *, topic: str | None, partition: int | None,
                     offset: int | None, line: int | None = None) -> dict:
    """The dead-letter record (schemas/deadletter.v1.json): reason, detail, source, and the
    original bytes as text when they are UTF-8 (`value_encoding` utf-8), else base64."""
    record: dict = {"v": 1, "reason": reason, "detail": detail,
                    "source": {"topic": topic, "partition": partition, "offset": offset}}
    if line is not None:
        record["line"] = line
    try:
        record["value"] = raw.decode("utf-8")
        record["value_encoding"] = "utf-8"
    except UnicodeDecodeError:
        record["value_base64"] = base64.b64encode(raw).decode("ascii")
        record["value_encoding"] = "base64"
    return record
