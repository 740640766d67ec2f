"""Scope vectors through the JSON of stage 1's partials and the scope-partials table."""

from __future__ import annotations

from decimal import Decimal

import orjson

from stream.core.config import KpiSettings
from stream.core.decode import decode_event
from stream.core.engine import Family, KpiEngine, evaluate_family
from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us
from stream.kafka.wire_vectors import decode_vector, encode_vector

AS_OF = "2026-11-24T00:00:00Z"
# More open leads than a 64-bit integer can sum the creation instants of (~1.8e15 us each)
OPEN_LEADS = 10_400


def _engine_with_open_leads(count: int) -> KpiEngine:
    settings = KpiSettings.from_env({"KPI_CLOCK": AS_OF})
    as_of_us = parse_rfc3339_us(AS_OF)
    engine = KpiEngine(settings, as_of_us)
    for n in range(count):
        created = format_rfc3339_us(as_of_us - (n % 5000 + 1) * 60_000_000)
        raw = orjson.dumps({"event_id": f"e{n}", "type": "lead.created", "occurred_at": created,
                            "lead_id": f"L{n}", "rep_id": f"rep-{n % 7}", "value": 100 + n})
        engine.apply(decode_event(raw, as_of_us, settings))
    return engine


def test_a_scope_with_more_open_leads_than_64_bits_sum_round_trips_exactly():
    engine = _engine_with_open_leads(OPEN_LEADS)
    vectors = {scope: vector for family, scope, vector in engine.take_dirty() if family is Family.LEAD}
    global_vector = vectors[("global", "all")]
    assert max(global_vector) >= 1 << 64, "the premise: a field beyond what orjson writes as a number"

    for scope, vector in vectors.items():
        read_back = decode_vector(orjson.loads(orjson.dumps(encode_vector(vector))))
        assert read_back == list(vector), scope
        assert [type(x) for x in read_back] == [type(x) for x in vector], scope
        assert (evaluate_family(engine.settings, engine.layouts, Family.LEAD, scope, read_back, engine.now_us)
                == evaluate_family(engine.settings, engine.layouts, Family.LEAD, scope, vector, engine.now_us))


def test_money_ints_and_the_64_bit_bounds_keep_their_types_and_values():
    vector = [0, 7, -(1 << 63), (1 << 63) - 1, 1 << 63, -(1 << 63) - 1, 10 ** 30, Decimal("1234.50"), Decimal("0.00"),
              Decimal("-3.1")]
    encoded = encode_vector(vector)
    assert encoded[:4] == [0, 7, -(1 << 63), (1 << 63) - 1], "in range: plain JSON numbers"
    assert all(isinstance(x, str) for x in encoded[4:]), "beyond 64 bits, or money: text"
    read_back = decode_vector(orjson.loads(orjson.dumps(encoded)))
    assert read_back == vector
    assert [type(x) for x in read_back] == [type(x) for x in vector]
    assert str(read_back[7]) == "1234.50" and str(read_back[8]) == "0.00", "a Decimal keeps its exponent"
