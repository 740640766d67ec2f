"""Decoding: reasons, their order (spec section 4), exact amounts, and no exception but Rejected."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from stream.core.config import KpiSettings
from stream.core.decode import REJECT_REASONS, Rejected, decode_event
from stream.core.timeparse import parse_rfc3339_us

SETTINGS = KpiSettings()
NOW = parse_rfc3339_us("2026-11-24T12:00:00Z")
ORDER = {"event_id": "e1", "type": "order.placed", "occurred_at": "2026-11-24T11:00:00Z", "outlet_id": "o1",
         "order_id": "x", "amount": "12.50", "currency": "USD", "lines": 2}


def reason(raw: bytes, ref: int = NOW, settings: KpiSettings = SETTINGS) -> str | None:
    try:
        decode_event(raw, ref, settings)
        return None
    except Rejected as rejected:
        assert rejected.detail
        return rejected.reason


def order(**changes) -> bytes:
    return orjson.dumps({**ORDER, **changes})


def test_non_utf8_bytes_are_malformed_json():
    assert reason(b'{"event_id": "\xff"}') == "malformed_json"


def test_size_is_checked_before_json():
    assert reason(b"{" * 70_000) == "oversized"
    assert reason(b"{" * 10) == "malformed_json"


def test_first_fault_in_spec_order_wins():
    assert reason(order(event_id="", amount=-1)) == "bad_value"  # event_id's, before amount's
    assert reason(order(occurred_at="soon", lines=0)) == "bad_timestamp"
    assert reason(order(amount=-1, currency="EUR")) == "bad_value"  # field checks before currency_mismatch
    assert reason(order(currency="EUR", occurred_at="2026-11-25T00:00:00Z")) == "currency_mismatch"  # before future
    assert reason(order(type=None, event_id=None)) == "missing_field"
    assert reason(orjson.dumps([ORDER])) == "not_an_object"


def test_type_faults_come_before_every_other_field():
    assert reason(order(type=5, event_id=5)) == "bad_type"
    assert reason(order(type="order.refunded", lines=0)) == "unknown_type"


def test_future_event_is_judged_against_the_reference_instant_with_the_tolerance_included():
    at_tolerance = order(occurred_at="2026-11-24T12:05:00Z")
    beyond = order(occurred_at="2026-11-24T12:05:00.001Z")
    assert reason(at_tolerance) is None
    assert reason(beyond) == "future_event"
    assert reason(beyond, ref=NOW + 1000) is None


def test_decimal_string_amounts_stay_exact():
    first = decode_event(order(amount="0.1"), NOW, SETTINGS)
    second = decode_event(order(amount=0.2), NOW, SETTINGS)
    assert first.amount + second.amount == Decimal("0.3")


def test_optional_null_is_absent_but_an_empty_string_is_a_bad_value():
    assert decode_event(order(rep_id=None), NOW, SETTINGS).rep_id is None
    assert reason(order(rep_id="")) == "bad_value"


@hsettings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
                 lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
                 max_leaves=20).map(lambda doc: orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) if _dumpable(doc) else b"x"),
    st.dictionaries(st.sampled_from(list(ORDER) + ["visit_id", "rep_id", "kind", "lead_id", "value"]),
                    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=30),
                    max_size=9).map(lambda d: orjson.dumps({**ORDER, **d})),
))
def test_any_input_is_an_event_or_a_rejection_with_a_spec_reason(raw):
    try:
        decode_event(raw, NOW, SETTINGS)
    except Rejected as rejected:
        assert rejected.reason in REJECT_REASONS


def _dumpable(doc) -> bool:
    try:
        orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
        return True
    except (TypeError, orjson.JSONEncodeError):
        return False


@pytest.mark.parametrize("text", ["2026-11-24T10:00:00Z", "2026-11-24t10:00:00.123456789+07:00", "1999-12-31T23:59:59-12:00"])
def test_rfc3339_forms_are_accepted(text):
    assert reason(order(occurred_at=text)) in (None, "future_event")


@pytest.mark.parametrize("text", ["2026-11-24", "2026-11-24 10:00:00Z", "2026-02-30T00:00:00Z", "2026-11-24T24:00:00Z",
                                  "2026-11-24T10:00:00", "２026-11-24T10:00:00Z", "2026-12-31T23:59:60Z"])
def test_non_rfc3339_timestamps_are_bad_timestamps(text):
    assert reason(order(occurred_at=text)) == "bad_timestamp"
