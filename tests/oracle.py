"""Brute-force KPI oracle: every KPI of kpi-spec.md, straight from raw input messages.

This is the reference the engine is tested against, so it is written to be obviously right
rather than fast, and shares NO code with the `stream` package (standard library + jsonschema).

    oracle_kpis(raw_messages, as_of, settings) -> {kpi.updates key: {value, numerator, denominator}}

How it works, in three plain steps:
1. Acceptance (spec sections 1 and 4): each message is accepted or rejected on its own; an
   accepted event whose event_id was already accepted is a duplicate and is dropped. `as_of` is
   the pinned clock, i.e. the reference instant of every message (future_event, dedupe).
2. Facts: per outlet / lead, the current attributes, onboarding time, lead close and won value,
   each found by scanning that entity's accepted events.
3. KPIs: for every window, every outlet / order / visit / lead / activity is looked at once and
   added to each scope it belongs to. Sums are exact (ints, Fractions); rounding happens only
   when a value is published.

Calendar periods (spec 8) are more views of the same loops: a period's "inside" is "local date
in the period (zoneinfo), at or before as_of"; lmtd's "in the previous month, slot at or before
m's"; every current period is viewed again under its alias.

Times are integer microseconds since the Unix epoch (finer fractions are truncated, i.e.
floored, which leaves slot numbers exact). slot(t) = floor(t / R), S = slot(as_of).
"inside W" = S - W/R < slot(t) <= S. "at or before as_of" = slot(t) <= S.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

US = 1_000_000
US_PER_DAY = 86_400 * US
UNASSIGNED = "unassigned"
KINDS = ("call", "email", "meeting", "demo")
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@dataclass(frozen=True)
class OracleSettings:
    slot_seconds: int = 60
    windows: tuple[str, ...] = ("7d", "30d", "60d")  # labels like "7d","90s","5m","12h"
    horizons: tuple[str, ...] = ("7d", "14d", "30d")
    dormancy: str = "30d"
    base_currency: str = "USD"
    future_tolerance: str = "5m"
    max_event_bytes: int = 65536
    dedupe_horizon: str = "7d"
    # the business calendar (spec 8)
    timezone: str = "Asia/Jakarta"
    periods: tuple[str, ...] = ("day", "week", "month", "quarter")
    period_history: int = 2


# ------------------------------------------------------------------------------------------
# Durations and timestamps
# ------------------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(label) -> int:
    """'90s' / '5m' / '12h' / '30d' (or a plain int of seconds) -> seconds."""
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    match = re.fullmatch(r"([0-9]+)([smhd])", label)
    if match is None:
        raise ValueError(f"not a duration: {label!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def duration_label(seconds: int) -> str:
    """The label used in keys: the largest unit that divides exactly (86400 -> 1d, 90 -> 90s)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds != 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# RFC 3339 section 5.6: full-date "T" full-time; "T" and "Z" may be lower case; ASCII digits
# only; any number of fraction digits; offset hours 00-23, minutes 00-59.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_EPOCH = datetime(1970, 1, 1)


def instant_us(text) -> int | None:
    """RFC 3339 date-time -> microseconds since the epoch (fraction truncated), else None.

    Calendar validity is checked by `datetime` (month 1-12, real day of month, hour <= 23,
    minute <= 59, second <= 59: a leap second :60 cannot be represented and is rejected; year 0
    is rejected)."""
    if not isinstance(text, str):
        return None
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return None
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    if offset in ("Z", "z"):
        offset_minutes = 0
    else:
        off_hours, off_minutes = int(offset[1:3]), int(offset[4:6])
        if off_hours > 23 or off_minutes > 59:
            return None
        offset_minutes = off_hours * 60 + off_minutes
        if offset[0] == "-":
            offset_minutes = -offset_minutes
    local_us = (local - _EPOCH) // timedelta(microseconds=1) + micros
    return local_us - offset_minutes * 60 * US


# ------------------------------------------------------------------------------------------
# The business calendar (spec 8), from the definitions: a period is the set of instants whose
# local date (in the zone) falls in it; it starts at the first instant whose local date is its
# first day or later.
# ------------------------------------------------------------------------------------------

_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ALIAS = {"day": "today", "week": "wtd", "month": "mtd", "quarter": "qtd", "year": "ytd"}


@lru_cache(maxsize=1 << 16)
def local_date_of(t_us: int, zone: ZoneInfo) -> date:
    return (_UTC_EPOCH + timedelta(microseconds=t_us)).astimezone(zone).date()


def period_of(kind: str, day: date):
    """A period as a comparable identity: (kind, year, number) with number = ordinal day, ISO
    week, month or quarter (year: 0)."""
    if kind == "day":
        return (kind, day.year, day.toordinal())
    if kind == "week":
        iso_year, week, _ = day.isocalendar()
        return (kind, iso_year, week)
    if kind == "month":
        return (kind, day.year, day.month)
    if kind == "quarter":
        return (kind, day.year, (day.month - 1) // 3 + 1)
    return (kind, day.year, 0)


def first_day_of(period) -> date:
    kind, year, number = period
    if kind == "day":
        return date.fromordinal(number)
    if kind == "week":
        return date.fromisocalendar(year, number, 1)
    if kind == "month":
        return date(year, number, 1)
    if kind == "quarter":
        return date(year, 3 * number - 2, 1)
    return date(year, 1, 1)


def period_before(period):
    return period_of(period[0], first_day_of(period) - timedelta(days=1))


def period_after(period):
    """The period following `period`: the one holding the first day that is not in it."""
    day = first_day_of(period)
    while period_of(period[0], day) == period:
        day += timedelta(days=1)
    return period_of(period[0], day)


def period_name(period) -> str:
    kind, year, number = period
    if kind == "day":
        return date.fromordinal(number).isoformat()
    if kind == "week":
        return f"{year:04d}-W{number:02d}"
    if kind == "month":
        return f"{year:04d}-{number:02d}"
    if kind == "quarter":
        return f"{year:04d}-Q{number}"
    return f"{year:04d}"


def period_start_us(period, zone: ZoneInfo) -> int:
    """First instant (whole seconds: zone offsets are) whose local date is the period's first day
    or later, by bisection over a window of four days around the UTC midnight of that day."""
    day = first_day_of(period)
    midnight = int((datetime(day.year, day.month, day.day, tzinfo=timezone.utc) - _UTC_EPOCH).total_seconds())
    low, high = midnight - 2 * 86400, midnight + 2 * 86400
    while low < high:
        middle = (low + high) // 2
        if local_date_of(middle * US, zone) >= day:
            high = middle
        else:
            low = middle + 1
    return low * US


# ------------------------------------------------------------------------------------------
# Acceptance
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """An accepted event. `t` is occurred_at in microseconds; `doc` the decoded JSON object
    (floats decoded as Decimal, exactly as written)."""

    index: int  # position in the input (0-based)
    type: str
    event_id: str
    t: int
    doc: dict

    def get(self, name):
        return self.doc.get(name)


def _is_number(x) -> bool:
    return isinstance(x, (int, Decimal)) and not isinstance(x, bool)


def _ok_id(x) -> bool:
    return isinstance(x, str) and len(x) >= 1


def _ok_amount(x) -> bool:
    if _is_number(x):
        return x >= 0
    return isinstance(x, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", x) is not None


def _ok_lines(x) -> bool:
    # An integer in the JSON sense (JSON Schema: any number with a zero fractional part).
    return _is_number(x) and x == int(x) and x >= 1


def _ok_value(x) -> bool:
    return _is_number(x) and x >= 0


def _ok_kind(x) -> bool:
    return x in KINDS  # only strings can be equal to these


def _ok_time(x) -> bool:
    return instant_us(x) is not None


def _ok_plan_date(x) -> bool:
    """A local date written YYYY-MM-DD, zero-padded, that exists (spec 13.1)."""
    if not isinstance(x, str) or re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", x) is None:
        return False
    try:
        date(int(x[:4]), int(x[5:7]), int(x[8:]))
    except ValueError:
        return False
    return True


def _ok_status(x) -> bool:
    return x in ("planned", "cancelled")


# Per type: (field, check, required) in the order of spec section 1. Optional fields may be
# absent or null; when present and non-null they must pass the check (an empty string fails).
_FIELDS = {
    "outlet.onboarded": [("outlet_id", _ok_id, True), ("region", _ok_id, False), ("territory", _ok_id, False),
                         ("distributor_id", _ok_id, False), ("channel", _ok_id, False), ("rep_id", _ok_id, False)],
    "order.placed": [("outlet_id", _ok_id, True), ("order_id", _ok_id, True), ("amount", _ok_amount, True),
                     ("currency", None, True),  # checked against the base currency
                     ("lines", _ok_lines, True), ("rep_id", _ok_id, False), ("visit_id", _ok_id, False)],
    "visit.completed": [("outlet_id", _ok_id, True), ("visit_id", _ok_id, True), ("rep_id", _ok_id, True),
                        ("checked_in_at", _ok_time, False), ("checked_out_at", _ok_time, False)],
    "lead.created": [("lead_id", _ok_id, True), ("rep_id", _ok_id, True), ("value", _ok_value, False),
                     ("region", _ok_id, False)],
    "lead.updated": [("lead_id", _ok_id, True), ("rep_id", _ok_id, False), ("value", _ok_value, False),
                     ("stage", _ok_id, False), ("region", _ok_id, False)],
    "lead.won": [("lead_id", _ok_id, True), ("value", _ok_value, False)],
    "lead.lost": [("lead_id", _ok_id, True), ("reason", _ok_id, False)],
    "activity.logged": [("rep_id", _ok_id, True), ("kind", _ok_kind, True), ("lead_id", _ok_id, False),
                        ("outlet_id", _ok_id, False)],
    # spec 10
    "visit.planned": [("outlet_id", _ok_id, True), ("rep_id", _ok_id, True), ("plan_date", _ok_plan_date, True),
                      ("status", _ok_status, False)],
    "order.cancelled": [("outlet_id", _ok_id, True), ("order_id", _ok_id, True), ("reason", _ok_id, False)],
    "order.returned": [("outlet_id", _ok_id, True), ("order_id", _ok_id, True), ("amount", _ok_amount, True),
                       ("currency", None, True), ("rep_id", _ok_id, False)],
}
_FIELDS["outlet.updated"] = _FIELDS["outlet.onboarded"]
_FIELDS["target.set"] = []  # judged by _target_problem (its fields depend on the kpi and settings)

# Spec 9: targetable KPIs and the scopes of each (spec 2); distinct counts are not projected.
TARGET_FAMILY = {"net_sales_amount": "outlet", "new_outlets": "outlet", "visited_outlets": "outlet",
                 "calls_on_plan": "outlet", "active_accounts": "outlet", "reactivated_accounts": "outlet", "orders": "outlet",
                 "sales_amount": "outlet", "visits": "outlet", "productive_visits": "outlet",
                 "new_leads": "lead", "activities": "activity"}
TARGET_SCOPES = {"outlet": ("global", "region", "territory", "distributor", "channel", "rep"),
                 "lead": ("global", "rep", "region"), "activity": ("global", "rep")}
UNPROJECTED = ("active_accounts", "reactivated_accounts", "visited_outlets")
MONEY_KPIS = ("sales_amount", "net_sales_amount")
_PERIOD_FORMS = {"day": r"([0-9]{4})-([0-9]{2})-([0-9]{2})", "week": r"([0-9]{4})-W([0-9]{2})",
                 "month": r"([0-9]{4})-([0-9]{2})", "quarter": r"([0-9]{4})-Q([1-4])", "year": r"([0-9]{4})"}


def parse_period(text):
    """A designator -> the oracle's period identity (kind, year, number), or None."""
    if not isinstance(text, str):
        return None
    for kind, form in _PERIOD_FORMS.items():
        match = re.fullmatch(form, text)
        if not match:
            continue
        parts = [int(p) for p in match.groups()]
        try:
            if kind == "day":
                day = date(*parts)
            elif kind == "week":
                day = date.fromisocalendar(parts[0], parts[1], 1)
            elif kind == "month":
                day = date(parts[0], parts[1], 1)
            elif kind == "quarter":
                day = date(parts[0], 3 * parts[1] - 2, 1)
            else:
                day = date(parts[0], 1, 1)
        except ValueError:
            return None
        period = period_of(kind, day)
        return period if period_name(period) == text else None
    return None


def _target_problem(doc: dict, settings) -> str | None:
    kpi = doc.get("kpi")
    if kpi not in TARGET_FAMILY:
        return "kpi"
    period = parse_period(doc.get("period"))
    if period is None or period[0] not in settings.periods:
        return "period"
    if doc.get("scope") not in TARGET_SCOPES[TARGET_FAMILY[kpi]]:
        return "scope"
    if not _ok_id(doc.get("scope_id")):
        return "scope_id"
    kind = doc.get("kind")
    if kind is not None and (kpi != "activities" or kind not in KINDS + ("all",)):
        return "kind"
    if "value" not in doc:
        return "value missing"
    value = doc["value"]
    if value is not None and not _ok_amount(value):
        return "value"
    return None

_schema_cache: dict[str, object] = {}


def _schema_validator(event_type: str):
    """The Draft 2020-12 validator of schemas/<type>.v1.json, loaded on first use; None when the
    file does not exist (then only the oracle's own checks apply)."""
    if event_type in _schema_cache:
        return _schema_cache[event_type]
    path = SCHEMA_DIR / f"{event_type}.v1.json"
    validator = None
    if path.exists():
        import jsonschema
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        def retrieve(uri: str):  # $ref to a sibling file, by its file name
            sibling = SCHEMA_DIR / uri.rstrip("/").rsplit("/", 1)[-1]
            return Resource.from_contents(json.loads(sibling.read_text("utf-8")),
                                          default_specification=DRAFT202012)

        # Floats are decoded as Decimal: a Decimal with no fractional part is a JSON integer.
        base = jsonschema.Draft202012Validator
        checker = base.TYPE_CHECKER.redefine(
            "integer",
            lambda c, x: base.TYPE_CHECKER.is_type(x, "integer")
            or (isinstance(x, Decimal) and x.is_finite() and x == int(x)),
        )
        cls = jsonschema.validators.extend(base, type_checker=checker)
        schema = json.loads(path.read_text("utf-8"))
        validator = cls(schema, registry=Registry(retrieve=retrieve))
    _schema_cache[event_type] = validator
    return validator


def _reject_constant(name):
    raise ValueError(f"not JSON: {name}")


def judge(raw: bytes, ref_us: int, settings: OracleSettings) -> tuple[dict | None, int | None, str]:
    """One message on its own: (doc, occurred_us, "ok") or (None, None, why). `why` is a short
    explanation for debugging, NOT necessarily the spec's dead-letter reason."""
    if len(raw) > settings.max_event_bytes:
        return None, None, "oversized"
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        json.dumps(doc, ensure_ascii=False, default=str).encode("utf-8")  # lone surrogates
    except (UnicodeError, ValueError):
        return None, None, "not UTF-8 JSON"
    if not isinstance(doc, dict):
        return None, None, "not an object"
    event_type = doc.get("type")
    if not isinstance(event_type, str) or event_type not in _FIELDS:
        return None, None, "type"
    event_id = doc.get("event_id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 128:
        return None, None, "event_id"
    t = instant_us(doc.get("occurred_at"))
    if t is None:
        return None, None, "occurred_at"
    if event_type == "target.set":
        problem = _target_problem(doc, settings)
        if problem is not None:
            return None, None, problem
    for name, check, required in _FIELDS[event_type]:
        value = doc.get(name)
        if value is None:
            if required:
                return None, None, f"missing {name}"
            continue
        if check is not None and not check(value):
            return None, None, f"bad {name}"
    validator = _schema_validator(event_type)
    if validator is not None:
        error = next(iter(validator.iter_errors(doc)), None)
        if error is not None:
            return None, None, f"schema: {error.message}"
    if event_type in ("order.placed", "order.returned") and doc.get("currency") != settings.base_currency:
        return None, None, "currency"
    if t - ref_us > duration_seconds(settings.future_tolerance) * US:
        return None, None, "future"
    return doc, t, "ok"


def accepted_events(raw_messages: list[bytes], as_of_us: int, settings: OracleSettings) -> list[Event]:
    """Accepted, de-duplicated events in arrival order."""
    horizon_us = duration_seconds(settings.dedupe_horizon) * US
    # Project decision (README "Spec decisions"): an event_id is unique per partition key --
    # the entity an event belongs to (outlet_id for outlet/order/visit events, lead_id, rep_id
    # for activities). The same id for two different entities is two events.
    first_seen: dict[tuple[str, str, str], int] = {}  # (family, entity, event_id) -> ref instant
    out: list[Event] = []
    for index, raw in enumerate(raw_messages):
        ref_us = as_of_us  # the pinned clock is every message's reference instant
        doc, t, _why = judge(bytes(raw), ref_us, settings)
        if doc is None:
            continue  # rejected: not remembered
        event_type = doc["type"]
        if event_type.startswith("lead."):
            identity = ("lead", doc["lead_id"], doc["event_id"])
        elif event_type == "activity.logged":
            identity = ("activity", doc["rep_id"], doc["event_id"])
        elif event_type == "target.set":
            identity = ("target", target_key(doc), doc["event_id"])
        else:
            identity = ("outlet", doc["outlet_id"], doc["event_id"])
        if identity in first_seen and 0 <= ref_us - first_seen[identity] <= horizon_us:
            continue  # duplicate of an earlier accepted event
        first_seen[identity] = ref_us
        event_id = doc["event_id"]
        out.append(Event(index, doc["type"], event_id, t, doc))
    return out


def exact_amount(x) -> Fraction:
    """An amount or lead value (int, Decimal, or decimal string) as an exact Fraction."""
    return Fraction(x) if not isinstance(x, str) else Fraction(Decimal(x))


# ------------------------------------------------------------------------------------------
# Keys and published values
# ------------------------------------------------------------------------------------------

def _escape(segment: str) -> str:
    return segment.replace("%", "%25").replace("|", "%7C")


def target_key(doc: dict) -> str:
    """A target's identity (spec 9): `{kpi}|{period}|{scope}|{scope_id}` plus `|{kind}` (default
    `all`) for activities, segments escaped as in 5.1."""
    parts = [doc["kpi"], doc["period"], doc["scope"], doc["scope_id"]]
    if doc["kpi"] == "activities":
        parts.append(doc.get("kind") or "all")
    return "|".join(_escape(part) for part in parts)


def kpi_key(kpi: str, window: str | None, scope: str, scope_id: str, extra: str | None = None) -> str:
    parts = [kpi, window if window is not None else "-", scope, scope_id]
    if extra is not None:
        parts.append(extra)
    return "|".join(_escape(p) for p in parts)


def _count(n: int) -> dict:
    return {"value": n, "numerator": None, "denominator": None}


def _ratio(num: int, den: int) -> dict:
    return {"value": num / den if den else None, "numerator": num, "denominator": den}


def _round_cents(x: Fraction) -> float:
    """Half-even to 0.01, as a float (round() of a Fraction rounds half to even)."""
    return float(Fraction(round(x * 100), 100))


def _money(total: Fraction) -> dict:
    return {"value": _round_cents(total), "numerator": None, "denominator": None}


def _money_mean(total: Fraction, n: int) -> dict:
    return {"value": _round_cents(total / n) if n else None, "numerator": _round_cents(total), "denominator": n}


def _days_mean(total_us: int, n: int) -> dict:
    return {"value": total_us / (n * US_PER_DAY) if n else None, "numerator": total_us / US_PER_DAY, "denominator": n}


# ------------------------------------------------------------------------------------------
# The KPIs
# ------------------------------------------------------------------------------------------

def _latest(events: list[Event]) -> Event | None:
    """Latest by occurred_at; ties: greater event_id."""
    return max(events, key=lambda e: (e.t, e.event_id), default=None)


def _latest_value(events: list[Event], name: str) -> str:
    best = _latest([e for e in events if e.get(name) is not None])
    return UNASSIGNED if best is None else best.get(name)


def oracle_kpis(raw_messages: list[bytes], as_of: str, settings: OracleSettings = OracleSettings()) -> dict[str, dict]:
    as_of_us = instant_us(as_of)
    if as_of_us is None:
        raise ValueError(f"as_of is not RFC 3339: {as_of!r}")
    R = settings.slot_seconds * US  # slot length, microseconds
    S = as_of_us // R
    windows = []  # (label, number of slots)
    for label in settings.windows:
        seconds = duration_seconds(label)
        if seconds <= 0 or seconds % settings.slot_seconds:
            raise ValueError(f"window {label} is not a positive multiple of the slot")
        windows.append((duration_label(seconds), seconds // settings.slot_seconds))
    horizons = [(duration_label(duration_seconds(h)), duration_seconds(h) * US) for h in settings.horizons]
    D = duration_seconds(settings.dormancy) * US

    def slot(t: int) -> int:
        return t // R

    def inside(t: int, width: int) -> bool:
        return S - width < slot(t) <= S

    def upto(t: int) -> bool:
        return slot(t) <= S

    # Views: (label, member(t), rolling). A rolling window's member is "inside W"; a period's is
    # "inside the period, at or before as_of" (spec 8); lmtd's "inside the previous month, in a
    # slot at or before m's". Each current period is also viewed under its alias.
    views = [(label, (lambda t, width=width: inside(t, width)), True) for label, width in windows]
    zone = ZoneInfo(settings.timezone)
    as_of_date = local_date_of(as_of_us, zone)
    view_period = {}  # label of a period or alias view -> its period (retention, spec 10.5)
    for kind in settings.periods:
        period = period_of(kind, as_of_date)
        for back in range(settings.period_history + 1):
            def member(t, kind=kind, period=period):
                return upto(t) and period_of(kind, local_date_of(t, zone)) == period
            views.append((period_name(period), member, False))
            view_period[period_name(period)] = period
            if back == 0:
                views.append((ALIAS[kind], member, False))
                view_period[ALIAS[kind]] = period
            period = period_before(period)
    if "month" in settings.periods:
        p0 = period_of("month", as_of_date)
        p1 = period_before(p0)
        m = period_start_us(p1, zone) + (as_of_us - period_start_us(p0, zone))

        def lmtd_member(t):
            return slot(t) <= m // R and period_of("month", local_date_of(t, zone)) == p1
        views.append(("lmtd", lmtd_member, False))

    events = accepted_events(raw_messages, as_of_us, settings)
    out: dict[str, dict] = {}
    exact_amounts: dict[str, Fraction] = {}  # money keys -> the exact sum (targets' actuals)

    # --- outlets, orders, visits -----------------------------------------------------------
    outlet_events, orders, visits = defaultdict(list), defaultdict(list), defaultdict(list)
    placements, cancelled = defaultdict(list), set()
    plan_events, returns = defaultdict(list), defaultdict(list)
    for e in events:
        if e.type in ("outlet.onboarded", "outlet.updated"):
            outlet_events[e.get("outlet_id")].append(e)
        elif e.type == "order.placed":
            placements[(e.get("outlet_id"), e.get("order_id"))].append(e)
        elif e.type == "visit.completed":
            visits[e.get("outlet_id")].append(e)
        elif e.type == "order.cancelled" and upto(e.t):  # a cancellation at or before as_of
            cancelled.add((e.get("outlet_id"), e.get("order_id")))
        elif e.type == "visit.planned" and upto(e.t):  # a plan's state at as_of
            plan_events[(e.get("outlet_id"), e.get("rep_id"), e.get("plan_date"))].append(e)
        elif e.type == "order.returned":
            returns[e.get("outlet_id")].append(e)
    # spec 10.4: an identity's order is its earliest placement (ties: greater event_id), and it
    # counts in nothing once cancelled; every other placement changes nothing
    for (o, order_id), placed in placements.items():
        earliest = min(e.t for e in placed)
        order = max((e for e in placed if e.t == earliest), key=lambda e: e.event_id)
        if (o, order_id) not in cancelled:
            orders[o].append(order)
    # spec 10.1: a planned call's state is its latest event at or before as_of
    plans = defaultdict(list)  # outlet -> [(rep, local plan date, plan time)] of planned calls
    planned_keys = set()
    for (o, rep, plan_date), plan in plan_events.items():
        latest = _latest(plan)
        if latest.get("status") in (None, "planned"):
            day = date.fromisoformat(plan_date)
            plans[o].append((rep, day, period_start_us(period_of("day", day), zone)))
            planned_keys.add((o, rep, day))
    outlet_ids = (set(outlet_events) | {o for o, _ in placements} | set(visits) | {o for o, _ in cancelled}
                  | {key[0] for key in plan_events} | set(returns))

    dims, assigned_rep, onboarded_at, previous_order = {}, {}, {}, {}
    for o in outlet_ids:
        ev = outlet_events[o]
        dims[o] = [("global", "all"),
                   ("region", _latest_value(ev, "region")),
                   ("territory", _latest_value(ev, "territory")),
                   ("distributor", _latest_value(ev, "distributor_id")),
                   ("channel", _latest_value(ev, "channel"))]
        assigned_rep[o] = _latest_value(ev, "rep_id")
        onboardings = [e.t for e in ev if e.type == "outlet.onboarded"]
        onboarded_at[o] = min(onboardings) if onboardings else None
        # The order immediately before each order, by occurred_at (ties by event_id; an order
        # tied with an earlier-sorted one has a gap of 0).
        ordered = sorted(orders[o], key=lambda e: (e.t, e.event_id))
        for i, order in enumerate(ordered):
            previous_order[order.event_id] = ordered[i - 1] if i > 0 else None

    def outlet_scopes(o):
        return dims[o] + [("rep", assigned_rep[o])]

    def order_scopes(order):
        o = order.get("outlet_id")
        return dims[o] + [("rep", order.get("rep_id") or assigned_rep[o])]

    def visit_scopes(visit):
        return dims[visit.get("outlet_id")] + [("rep", visit.get("rep_id"))]

    def return_scopes(returned):
        o = returned.get("outlet_id")
        return dims[o] + [("rep", returned.get("rep_id") or assigned_rep[o])]

    def plan_scopes(o, rep):
        return dims[o] + [("rep", rep)]

    known = set()
    for o in outlet_ids:
        known.update(outlet_scopes(o))
        known.update(s for order in orders[o] for s in order_scopes(order))
        known.update(s for visit in visits[o] for s in visit_scopes(visit))
        known.update(s for returned in returns[o] for s in return_scopes(returned))
        known.update(s for rep, _day, _t in plans[o] for s in plan_scopes(o, rep))

    # spec 10.2: registered outlets (no window), the denominator of coverage and active rate
    registered = {o for o in outlet_ids if onboarded_at[o] is not None and upto(onboarded_at[o])}
    registered_count = defaultdict(int)
    for o in registered:
        for scope in outlet_scopes(o):
            registered_count[scope] += 1
    for scope_type, scope_id in known:
        out[kpi_key("registered_outlets", None, scope_type, scope_id)] = _count(registered_count[(scope_type, scope_id)])

    for label, member, rolling in views:
        tally = defaultdict(lambda: defaultdict(int))  # scope -> name -> exact number
        for o in outlet_ids:
            mine = orders[o]
            in_window = [x for x in mine if member(x.t)]
            so_far = [x for x in mine if upto(x.t)]
            counts = {}  # what this outlet adds to each of its scopes
            counts["active"] = 1 if in_window else 0
            counts["dormant"] = 1 if so_far and not in_window else 0
            counts["reactivated"] = 1 if any(
                previous_order[x.event_id] is not None and x.t - previous_order[x.event_id].t > D
                for x in in_window) else 0
            b = onboarded_at[o]
            if b is not None and member(b):
                counts["onboarded"] = 1
                for h_label, n in horizons:
                    counts["converted " + h_label] = 1 if any(b <= x.t <= b + n and upto(x.t) for x in mine) else 0
            for scope in outlet_scopes(o):
                for name, amount in counts.items():
                    tally[scope][name] += amount
            for order in in_window:
                for scope in order_scopes(order):
                    tally[scope]["orders"] += 1
                    tally[scope]["amount"] += exact_amount(order.get("amount"))
                    tally[scope]["lines"] += int(order.get("lines"))
            linked = {x.get("visit_id") for x in so_far}  # visit ids named by orders at or before as_of
            for visit in visits[o]:
                if not member(visit.t):
                    continue
                productive = visit.get("visit_id") in linked
                for scope in visit_scopes(visit):
                    tally[scope]["visits"] += 1
                    tally[scope]["productive"] += 1 if productive else 0
            # --- spec 10: field execution
            seen = [v for v in visits[o] if member(v.t)]
            own = {"visited": 1 if seen else 0, "covered": 1 if seen and o in registered else 0,
                   "active_registered": 1 if in_window and o in registered else 0}
            if label in view_period:  # retention: this period P against the one before, Q
                p = view_period[label]
                q = period_before(p)
                in_p = any(upto(x.t) and period_of(p[0], local_date_of(x.t, zone)) == p for x in mine)
                in_q = any(upto(x.t) and period_of(q[0], local_date_of(x.t, zone)) == q for x in mine)
                own["had_q"] = 1 if in_q else 0
                own["retained"] = 1 if in_p and in_q else 0
            for scope in outlet_scopes(o):
                for name, amount in own.items():
                    tally[scope][name] += amount
            for visit in seen:
                facts = {}
                day = local_date_of(visit.t, zone)
                facts["unplanned"] = 0 if (o, visit.get("rep_id"), day) in planned_keys else 1
                checked_in, checked_out = instant_us(visit.get("checked_in_at")), instant_us(visit.get("checked_out_at"))
                if checked_in is not None and checked_out is not None and checked_out >= checked_in:
                    facts["timed"] = 1
                    facts["visit_us"] = checked_out - checked_in
                for scope in visit_scopes(visit):
                    for name, amount in facts.items():
                        tally[scope][name] += amount
            for rep, day, plan_t in plans[o]:
                if not member(plan_t):
                    continue
                on_plan = any(v.get("rep_id") == rep and local_date_of(v.t, zone) == day and upto(v.t)
                              for v in visits[o])
                for scope in plan_scopes(o, rep):
                    tally[scope]["planned"] += 1
                    tally[scope]["on_plan"] += 1 if on_plan else 0
            for returned in returns[o]:
                if member(returned.t):
                    for scope in return_scopes(returned):
                        tally[scope]["returns"] += 1
                        tally[scope]["returned_amount"] += exact_amount(returned.get("amount"))
        for scope_type, scope_id in known:
            v = tally[(scope_type, scope_id)]

            def put(kpi, record, extra=None):
                out[kpi_key(kpi, label, scope_type, scope_id, extra)] = record

            put("active_accounts", _count(v["active"]))
            if rolling:  # dormant_accounts has no period values (spec 8)
                put("dormant_accounts", _count(v["dormant"]))
            put("reactivated_accounts", _count(v["reactivated"]))
            for h_label, _n in horizons:
                put("first_order_conversion", _ratio(v["converted " + h_label], v["onboarded"]), h_label)
            put("orders", _count(v["orders"]))
            put("sales_amount", _money(Fraction(v["amount"])))
            exact_amounts[kpi_key("sales_amount", label, scope_type, scope_id)] = Fraction(v["amount"])
            put("average_order_value", _money_mean(Fraction(v["amount"]), v["orders"]))
            put("lines_per_order", _ratio(v["lines"], v["orders"]))
            put("visits", _count(v["visits"]))
            put("productive_visits", _count(v["productive"]))
            put("visit_to_order_ratio", _ratio(v["productive"], v["visits"]))
            put("planned_calls", _count(v["planned"]))
            put("calls_on_plan", _count(v["on_plan"]))
            put("call_compliance", _ratio(v["on_plan"], v["planned"]))
            put("unplanned_visits", _count(v["unplanned"]))
            put("new_outlets", _count(v["onboarded"]))
            put("visited_outlets", _count(v["visited"]))
            registered_here = registered_count[(scope_type, scope_id)]
            put("coverage", _ratio(v["covered"], registered_here))
            put("active_rate", _ratio(v["active_registered"], registered_here))
            put("avg_visit_minutes", {"value": v["visit_us"] / (v["timed"] * 60 * US) if v["timed"] else None,
                                      "numerator": v["visit_us"] / (60 * US), "denominator": v["timed"]})
            put("returns", _count(v["returns"]))
            put("returned_amount", _money(Fraction(v["returned_amount"])))
            put("net_sales_amount", _money(Fraction(v["amount"]) - Fraction(v["returned_amount"])))
            exact_amounts[kpi_key("net_sales_amount", label, scope_type, scope_id)] = (
                Fraction(v["amount"]) - Fraction(v["returned_amount"]))
            if label in view_period:
                put("retained_accounts", _count(v["retained"]))
                put("churned_accounts", _count(v["had_q"] - v["retained"]))
                put("retention_rate", _ratio(v["retained"], v["had_q"]))

    # --- leads -----------------------------------------------------------------------------
    lead_events = defaultdict(list)
    for e in events:
        if e.type.startswith("lead."):
            lead_events[e.get("lead_id")].append(e)

    leads = []  # one dict of facts per lead that has a lead.created
    for lead_id, ev in lead_events.items():
        created = [e.t for e in ev if e.type == "lead.created"]
        if not created:
            continue  # counts only once its creation is known
        giving = [e for e in ev if e.type in ("lead.created", "lead.updated")]  # rep_id / region / value
        closes = [e for e in ev if e.type in ("lead.won", "lead.lost")]
        close = None
        if closes:
            earliest = min(e.t for e in closes)
            close = max((e for e in closes if e.t == earliest), key=lambda e: e.event_id)
        value = None
        if close is not None and close.type == "lead.won":
            candidates = [e for e in giving if e.get("value") is not None and e.t <= close.t]
            if close.get("value") is not None:
                candidates.append(close)
            best = _latest(candidates)
            value = None if best is None else exact_amount(best.get("value"))
        leads.append({
            "created": min(created), "close": close, "value": value,
            "scopes": [("global", "all"), ("rep", _latest_value(giving, "rep_id")),
                       ("region", _latest_value(giving, "region"))],
        })

    lead_scopes = {s for lead in leads for s in lead["scopes"]} | {("global", "all")}
    open_count, open_age_us = defaultdict(int), defaultdict(int)
    for lead in leads:
        close = lead["close"]
        if upto(lead["created"]) and (close is None or not upto(close.t)):
            for scope in lead["scopes"]:
                open_count[scope] += 1
                open_age_us[scope] += as_of_us - lead["created"]
    for scope_type, scope_id in lead_scopes:
        scope = (scope_type, scope_id)
        out[kpi_key("open_leads", None, scope_type, scope_id)] = _count(open_count[scope])
        out[kpi_key("avg_open_lead_age_days", None, scope_type, scope_id)] = _days_mean(open_age_us[scope], open_count[scope])

    for label, member, _rolling in views:
        tally = defaultdict(lambda: defaultdict(int))
        for lead in leads:
            close = lead["close"]
            facts = defaultdict(int)
            if member(lead["created"]):
                facts["new"] = 1
            if close is not None and member(close.t):
                if close.type == "lead.won":
                    facts["won"] = 1
                    facts["cycle_us"] = close.t - lead["created"]
                    if lead["value"] is not None:
                        facts["valued"] = 1
                        facts["value_sum"] = lead["value"]
                else:
                    facts["lost"] = 1
            for scope in lead["scopes"]:
                for name, amount in facts.items():
                    tally[scope][name] += amount
        for scope_type, scope_id in lead_scopes:
            v = tally[(scope_type, scope_id)]
            opened = open_count[(scope_type, scope_id)]
            won, lost, valued = v["won"], v["lost"], v["valued"]
            value_sum, cycle_us = Fraction(v["value_sum"]), v["cycle_us"]

            def put(kpi, record):
                out[kpi_key(kpi, label, scope_type, scope_id)] = record

            put("new_leads", _count(v["new"]))
            put("win_rate", _ratio(won, won + lost))
            put("avg_deal_size", _money_mean(value_sum, valued))
            put("avg_sales_cycle_days", _days_mean(cycle_us, won))
            velocity = None
            if won + lost and valued and won and cycle_us != 0:
                velocity = _round_cents(Fraction(opened) * Fraction(won, won + lost) * (value_sum / valued)
                                        / Fraction(cycle_us, won * US_PER_DAY))
            put("pipeline_velocity", {"value": velocity, "numerator": None, "denominator": None})

    # --- activities ------------------------------------------------------------------------
    activities = [e for e in events if e.type == "activity.logged"]
    activity_scopes = {("global", "all")} | {("rep", e.get("rep_id")) for e in activities}
    for label, member, _rolling in views:
        tally = defaultdict(lambda: defaultdict(int))
        for e in activities:
            if member(e.t):
                for scope in (("global", "all"), ("rep", e.get("rep_id"))):
                    tally[scope][e.get("kind")] += 1
                    tally[scope]["all"] += 1
        for scope_type, scope_id in activity_scopes:
            for kind in KINDS + ("all",):
                out[kpi_key("activities", label, scope_type, scope_id, kind)] = _count(tally[(scope_type, scope_id)][kind])

    # --- targets (spec 9) -------------------------------------------------------------------
    published = {}  # designator -> (period, labels it is published under)
    for kind in settings.periods:
        period = period_of(kind, as_of_date)
        for back in range(settings.period_history + 1):
            published[period_name(period)] = (period, [period_name(period)] + ([ALIAS[kind]] if back == 0 else []))
            period = period_before(period)
    sets = defaultdict(list)
    for e in events:
        if e.type == "target.set" and upto(e.t):
            sets[target_key(e.doc)].append(e)
    for chosen in (max(found, key=lambda e: (e.t, e.event_id)) for found in sets.values()):
        kpi, designator, scope_type, scope_id = (chosen.get(n) for n in ("kpi", "period", "scope", "scope_id"))
        if designator not in published:
            continue  # older than the history, or a future period
        period, labels = published[designator]
        kind = (chosen.get("kind") or "all") if kpi == "activities" else None
        raw_target = chosen.get("value")
        target = None if raw_target is None else exact_amount(raw_target)
        money_kpi = kpi in MONEY_KPIS
        start = period_start_us(period, zone)
        end = period_start_us(period_after(period), zone)
        elapsed = min(end, (S + 1) * R) - start

        def shown(x: Fraction):
            if money_kpi:
                return _round_cents(x)
            return int(x) if x.denominator == 1 else float(x)

        for label in labels:
            def put_target(suffix, value, numerator=None, denominator=None):
                out[kpi_key(kpi + suffix, label, scope_type, scope_id, kind)] = {
                    "value": value, "numerator": numerator, "denominator": denominator}

            if target is None:
                for suffix in ("_target", "_attainment") + (() if kpi in UNPROJECTED else ("_projected", "_projected_attainment")):
                    put_target(suffix, None)
                continue
            actual_key = kpi_key(kpi, designator, scope_type, scope_id, kind)
            if money_kpi:
                actual = exact_amounts.get(actual_key, Fraction(0))
            else:
                actual = Fraction((out.get(actual_key) or {"value": 0})["value"] or 0)
            put_target("_target", shown(target))
            put_target("_attainment", float(actual / target) if target else None, shown(actual), shown(target))
            if kpi not in UNPROJECTED:
                projected = actual * Fraction(end - start, elapsed)
                put_target("_projected", shown(projected))
                put_target("_projected_attainment", float(projected / target) if target else None,
                           shown(projected), shown(target))

    return out


# ------------------------------------------------------------------------------------------
# Not a KPI: outlets per (territory, assigned rep)
# ------------------------------------------------------------------------------------------

def territory_rep_outlets(raw_messages: list[bytes], as_of: str,
                          settings: OracleSettings = OracleSettings()) -> dict[tuple[str, str], int]:
    """(territory, assigned rep) -> outlets there, by the outlets' current attributes (spec 2),
    over every outlet named by an accepted outlet, order or visit event -- the outlets whose
    outlet KPIs go to that territory and rep. What `kpi_stream_rep_territory_outlets` sums to."""
    as_of_us = instant_us(as_of)
    if as_of_us is None:
        raise ValueError(f"as_of is not RFC 3339: {as_of!r}")
    outlet_events = defaultdict(list)
    for e in accepted_events(raw_messages, as_of_us, settings):
        if e.type in ("outlet.onboarded", "outlet.updated", "order.placed", "visit.completed"):
            outlet_events[e.get("outlet_id")].append(e)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for events in outlet_events.values():
        attributes = [e for e in events if e.type.startswith("outlet.")]
        counts[(_latest_value(attributes, "territory"), _latest_value(attributes, "rep_id"))] += 1
    return dict(counts)
