"""The kpi.updates message and its CloudEvents headers (spec 5.1), built from a round's stamp."""

from __future__ import annotations

import hashlib

import orjson

from stream.core.kpis import KpiValue
from stream.core.timeparse import parse_rfc3339_us
from stream.stages.updates import cloudevent_headers, encode, round_stamp, update_key, update_message

AS_OF_US = parse_rfc3339_us("2026-11-23T07:15:00Z")
COMPUTED_AT_US = parse_rfc3339_us("2026-11-23T07:15:00.412Z")


def test_an_update_carries_the_spec_example_fields_and_the_rounds_instants():
    value = KpiValue("active_accounts", "30d", "territory", "JKT-01", 700)
    stamp = round_stamp(AS_OF_US, COMPUTED_AT_US, "/kpi-stream/app")
    assert orjson.loads(encode(update_message(value, stamp))) == {
        "v": 1, "kpi": "active_accounts", "window": "30d", "scope": "territory", "scope_id": "JKT-01",
        "as_of": "2026-11-23T07:15:00Z", "value": 700, "numerator": None, "denominator": None,
        "horizon": None, "kind": None, "computed_at": "2026-11-23T07:15:00.412Z",
    }


def test_cloudevent_headers_differ_per_key_only_in_ce_id_which_follows_key_and_as_of():
    stamp = round_stamp(AS_OF_US, COMPUTED_AT_US, "/kpi-stream/app")
    keys = [update_key(KpiValue("orders", "7d", "rep", rep, 1)) for rep in ("r1", "r2")]
    first, second = (dict(cloudevent_headers(key, stamp)) for key in keys)
    assert first == {
        "ce_specversion": b"1.0",
        "ce_id": hashlib.sha256(f"{keys[0]}@2026-11-23T07:15:00Z".encode()).hexdigest()[:32].encode(),
        "ce_source": b"/kpi-stream/app",
        "ce_type": b"kpi.updated.v1",
        "ce_time": b"2026-11-23T07:15:00.412Z",
        "content-type": b"application/json",
    }
    assert {k: v for k, v in second.items() if k != "ce_id"} == {k: v for k, v in first.items() if k != "ce_id"}
    assert second["ce_id"] != first["ce_id"]
    later = round_stamp(AS_OF_US + 60_000_000, COMPUTED_AT_US + 60_000_000, "/kpi-stream/app")
    assert dict(cloudevent_headers(keys[0], later))["ce_id"] != first["ce_id"]
    again = round_stamp(AS_OF_US, COMPUTED_AT_US + 5_000_000, "/kpi-stream/app")
    assert dict(cloudevent_headers(keys[0], again))["ce_id"] == first["ce_id"]  # same key and as_of: same id
