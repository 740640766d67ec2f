"""The decoder accepts exactly the documents the JSON Schemas in schemas/ accept, over valid
and invalid examples of every input type; the output schemas describe what the service writes."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from stream.core.config import KpiSettings
from stream.core.decode import Rejected, decode_event, rejection_record

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
SETTINGS = KpiSettings()
FAR_FUTURE = 10**18  # reference instant: nothing is a future_event here

T = "2026-11-24T10:00:00.250+07:00"
VALID = {
    "outlet.onboarded": {"outlet_id": "o1", "region": "north", "territory": "T1", "distributor_id": "d1",
                         "channel": "gt", "rep_id": "r1"},
    "outlet.updated": {"outlet_id": "o1", "territory": None},
    "order.placed": {"outlet_id": "o1", "order_id": "x", "amount": "12.50", "currency": "USD", "lines": 3,
                     "rep_id": "r1", "visit_id": "v1"},
    "visit.completed": {"outlet_id": "o1", "visit_id": "v1", "rep_id": "r1", "checked_in_at": "2026-11-24T09:00:00Z",
                        "checked_out_at": None},
    "lead.created": {"lead_id": "L1", "rep_id": "r1", "value": 1200, "region": "north"},
    "lead.updated": {"lead_id": "L1", "stage": "proposal"},
    "lead.won": {"lead_id": "L1", "value": 99.5},
    "lead.lost": {"lead_id": "L1", "reason": "price"},
    "activity.logged": {"rep_id": "r1", "kind": "demo", "outlet_id": "o1"},
    "target.set": {"kpi": "sales_amount", "period": "2026-11", "scope": "territory", "scope_id": "JKT-01",
                   "value": "150000.00"},
    "visit.planned": {"outlet_id": "o1", "rep_id": "r1", "plan_date": "2026-11-25", "status": "cancelled"},
    "order.cancelled": {"outlet_id": "o1", "order_id": "x", "reason": "out of stock"},
    "order.returned": {"outlet_id": "o1", "order_id": "x", "amount": 3.25, "currency": "USD", "rep_id": "r1"},
}
# (field, replacement value or DELETE): each must be rejected by both
DELETE = object()
COMMON_BAD = [("event_id", DELETE), ("event_id", 5), ("event_id", ""), ("event_id", "x" * 129),
              ("occurred_at", DELETE), ("occurred_at", 17), ("occurred_at", "2026-11-24"),
              ("occurred_at", "2026-11-24 10:00:00Z"), ("occurred_at", "2026-11-24T10:00:00"),
              ("type", DELETE), ("type", 3), ("type", "order.voided")]
TYPE_BAD = {
    "outlet.onboarded": [("outlet_id", DELETE), ("outlet_id", ""), ("region", 4), ("rep_id", "")],
    "outlet.updated": [("outlet_id", None), ("channel", ["gt"])],
    "order.placed": [("amount", -1), ("amount", "1e3"), ("amount", "-2.00"), ("amount", True), ("amount", DELETE),
                     ("currency", "usd"), ("currency", 840), ("lines", 0), ("lines", 1.5), ("lines", "2"),
                     ("lines", False), ("order_id", DELETE), ("visit_id", "")],
    "visit.completed": [("rep_id", DELETE), ("visit_id", 1), ("checked_in_at", "noon"), ("checked_out_at", 5)],
    "lead.created": [("rep_id", DELETE), ("value", -3), ("value", "100"), ("lead_id", "")],
    "lead.updated": [("lead_id", DELETE), ("value", True), ("stage", "")],
    "lead.won": [("value", -0.5), ("lead_id", 9)],
    "lead.lost": [("reason", 3), ("lead_id", DELETE)],
    "activity.logged": [("kind", "fax"), ("kind", DELETE), ("rep_id", None), ("lead_id", "")],
    "target.set": [("kpi", "win_rate"), ("kpi", DELETE), ("period", "2026-9"), ("period", "2026-M11"),
                   ("period", 202611), ("scope", "district"), ("scope_id", ""), ("kind", "call"),
                   ("value", DELETE), ("value", -1), ("value", "1e3"), ("value", True), ("value", [5])],
    "visit.planned": [("plan_date", DELETE), ("plan_date", 20261125), ("plan_date", "2026-9-01"),
                      ("plan_date", "2026-11-25T00:00:00Z"), ("status", "done"), ("status", 1), ("rep_id", DELETE)],
    "order.cancelled": [("order_id", DELETE), ("outlet_id", ""), ("reason", 7)],
    "order.returned": [("amount", -1), ("amount", DELETE), ("currency", "usd"), ("order_id", DELETE), ("rep_id", "")],
}
EXTRA_VALID = {
    "order.placed": [("amount", 0), ("amount", 7.875), ("lines", 2.0), ("rep_id", None), ("unknown_extra", {"a": 1})],
    "lead.updated": [("rep_id", "r2"), ("value", None)],
    "outlet.updated": [("region", None)],
    "target.set": [("value", None), ("value", 0), ("value", 1200), ("value", 99.5), ("period", "2026-W48"),
                   ("period", "2026-11-23"), ("period", "2026-Q4"), ("scope", "global"), ("kind", None)],
    "visit.planned": [("status", None), ("status", "planned")],
    "order.cancelled": [("reason", None)],
    "order.returned": [("amount", "0"), ("rep_id", None)],
}


def _doc(event_type: str, change=None) -> dict:
    doc = {"event_id": "e1", "type": event_type, "occurred_at": T, **copy.deepcopy(VALID[event_type])}
    if change:
        field, value = change
        if value is DELETE:
            doc.pop(field, None)
        else:
            doc[field] = value
    return doc


def _schema_accepts(doc: dict) -> bool:
    event_type = doc.get("type")
    path = SCHEMAS / f"{event_type}.v1.json" if isinstance(event_type, str) else None
    if path is None or not path.exists():
        return False
    return Draft202012Validator(orjson.loads(path.read_bytes())).is_valid(doc)


def _decoder_accepts(doc: dict) -> bool:
    try:
        decode_event(orjson.dumps(doc), FAR_FUTURE, SETTINGS)
        return True
    except Rejected:
        return False


CASES = (
    [(t, None, True) for t in VALID]
    + [(t, change, True) for t, changes in EXTRA_VALID.items() for change in changes]
    + [(t, change, False) for t in VALID for change in COMMON_BAD]
    + [(t, change, False) for t, changes in TYPE_BAD.items() for change in changes]
)


@pytest.mark.parametrize("event_type,change,valid", CASES,
                         ids=[f"{t}-{c[0] if c else 'valid'}-{'ok' if v else 'bad'}-{i}" for i, (t, c, v) in enumerate(CASES)])
def test_decoder_and_schema_agree(event_type, change, valid):
    doc = _doc(event_type, change)
    assert _schema_accepts(doc) == valid
    assert _decoder_accepts(doc) == valid


def test_every_input_type_has_a_schema_file():
    for event_type in VALID:
        schema = orjson.loads((SCHEMAS / f"{event_type}.v1.json").read_bytes())
        Draft202012Validator.check_schema(schema)


def test_kpi_update_and_dead_letter_records_match_their_schemas():
    update = {"v": 1, "kpi": "active_accounts", "window": "30d", "scope": "territory", "scope_id": "JKT-01",
              "as_of": "2026-11-23T07:15:00Z", "value": 700, "numerator": None, "denominator": None,
              "horizon": None, "kind": None, "computed_at": "2026-11-23T07:15:00.412Z"}
    Draft202012Validator(orjson.loads((SCHEMAS / "kpi_update.v1.json").read_bytes())).validate(update)
    dead_schema = Draft202012Validator(orjson.loads((SCHEMAS / "deadletter.v1.json").read_bytes()))
    dead_schema.validate(rejection_record(b"\xff", "malformed_json", "not UTF-8", topic="sales.orders", partition=0, offset=5))
    dead_schema.validate(rejection_record(b"{}", "missing_field", "type", topic=None, partition=None, offset=None, line=3))


@pytest.mark.parametrize("doc,valid", [
    ({"kpi": "activities", "period": "2026-11", "scope": "rep", "scope_id": "r1", "kind": "call", "value": 40}, True),
    ({"kpi": "activities", "period": "2026-11", "scope": "rep", "scope_id": "r1", "value": 40}, True),
    ({"kpi": "activities", "period": "2026-11", "scope": "territory", "scope_id": "T1", "value": 40}, False),
    ({"kpi": "new_leads", "period": "2026-Q4", "scope": "region", "scope_id": "north", "value": 12}, True),
    ({"kpi": "new_leads", "period": "2026-Q4", "scope": "channel", "scope_id": "gt", "value": 12}, False),
])
def test_target_scopes_and_kinds_follow_the_kpi_in_decoder_and_schema(doc, valid):
    doc = {"event_id": "e1", "type": "target.set", "occurred_at": T, **doc}
    assert _schema_accepts(doc) == valid
    assert _decoder_accepts(doc) == valid
