"""The scope stage's formats (stream/kafka/wire_partials.py): a partials message and a
scope-partials table entry read back as written."""

from decimal import Decimal

import orjson

from stream.kafka.wire_partials import (decode_groups, decode_partials, decode_scope_entry, encode_groups,
                                        encode_partials, encode_scope_entry, scope_key_bytes, scope_key_of_stored)
from stream.kafka.wire_vectors import decode_vector, encode_vector

ENTRY = ["outlet", "territory", "T01", 5, 2, 1_700_000_000_000_123, [3, 1, "12.50"]]


def test_a_partials_message_round_trips_and_carries_waiting_events_only_when_given():
    with_events = decode_partials(encode_partials(1_700_000_000_000, 42, [ENTRY], [[170000000, 3]]))
    assert (with_events.sent_ms, with_events.flush, with_events.entries, with_events.events) == (
        1_700_000_000_000, 42, [ENTRY], [[170000000, 3]])
    assert decode_partials(encode_partials(1, 2, [ENTRY], None)).events is None


def test_a_scope_entry_round_trips_with_each_source_version_and_either_key_form():
    value = encode_scope_entry(7, {"5": (3, 1, "12.50"), "0": (1, 0, "0.00")}, {5: (2, 9), 0: (1, 4)})
    partition, sources = decode_scope_entry(value)
    assert partition == 7
    assert sorted(sources) == [(0, (1, 4), [1, 0, "0.00"], []), (5, (2, 9), [3, 1, "12.50"], [])]
    assert decode_scope_entry(orjson.loads(value)) == (partition, sources)  # as faust's recovery hands it back
    key = ("outlet", "territory", "T01")
    assert scope_key_of_stored(scope_key_bytes(key)) == key == scope_key_of_stored(list(key))


def test_a_scope_entry_keeps_each_sources_period_groups_and_they_round_trip_exactly():
    groups = [((2, 683, False), (1, Decimal("12.50"), 1 << 70)), ((2, 682, True), (0, Decimal("0.10"), 3))]
    encoded = encode_groups(groups, encode_vector)
    value = encode_scope_entry(1, {"5": (3, 1, "12.50"), "0": (1, 0, "0.00")}, {5: (2, 9), 0: (1, 4)}, {"5": encoded})
    _, sources = decode_scope_entry(orjson.loads(value))
    by_source = {source: decode_groups(groups, decode_vector) for source, _v, _vec, groups in sources}
    assert by_source == {5: tuple(groups), 0: ()}
