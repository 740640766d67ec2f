"""A raw message's topic and key (spec section 1) as `kpi-stream send` routes it: by `type` to its
topic, keyed by its entity; whatever has no known type or usable key to `sales.events` with no key,
where the worker rejects it. The same verdicts as the worker's decoder and re-routing."""

from __future__ import annotations

import orjson
import pytest

from stream.core.config import KpiSettings
from stream.core.decode import Rejected, decode_event
from stream.core.events import EVENT_TYPES, partition_key
from stream.core.routing import MIXED_TOPIC, TOPIC_KEY, TYPE_TOPIC, UNROUTED, Route, route
from stream.devtools import generator
from stream.kafka.topics import INPUT_TOPICS
from stream.worker.entity_stage import FAMILY_TOPICS

AT = "2026-11-24T10:00:00Z"


def raw(**doc) -> bytes:
    return orjson.dumps({"event_id": "e", "occurred_at": AT, **doc})


@pytest.mark.parametrize(("event_type", "fields", "topic", "key"), [
    ("outlet.onboarded", {"outlet_id": "o1"}, "sales.outlets", b"o1"),
    ("outlet.updated", {"outlet_id": "o2", "rep_id": "r9"}, "sales.outlets", b"o2"),
    ("order.placed", {"outlet_id": "o3", "rep_id": "r9"}, "sales.orders", b"o3"),
    ("visit.completed", {"outlet_id": "o4", "rep_id": "r9"}, "sales.visits", b"o4"),
    ("lead.created", {"lead_id": "L1", "rep_id": "r9"}, "sales.leads", b"L1"),
    ("lead.updated", {"lead_id": "L2"}, "sales.leads", b"L2"),
    ("lead.won", {"lead_id": "L3"}, "sales.leads", b"L3"),
    ("lead.lost", {"lead_id": "L4"}, "sales.leads", b"L4"),
    ("activity.logged", {"rep_id": "r9", "lead_id": "L1", "outlet_id": "o1"}, "sales.activities", b"r9"),
])
def test_each_type_goes_to_its_topic_keyed_by_its_entity(event_type, fields, topic, key):
    assert route(raw(type=event_type, **fields)) == Route(topic, key)


def test_a_key_is_its_id_in_utf8():
    assert route(raw(type="order.placed", outlet_id="café 9|x")) == Route("sales.orders", "café 9|x".encode())


def test_a_known_type_with_bad_other_fields_still_goes_to_its_topic_for_the_worker_to_judge_there():
    assert route(raw(type="order.placed", outlet_id="o1", amount=-5, occurred_at="soon")) == Route("sales.orders", b"o1")


@pytest.mark.parametrize("message", [
    b'{"event_id": "broken"', b"\xff\xfe not utf-8 \x80", b"", b"   ", b"[1, 2]", b'"order.placed"', b"null",
    raw(outlet_id="o1"),  # no type
    raw(type=None, outlet_id="o1"), raw(type=7, outlet_id="o1"),
    raw(type=["order.placed"], outlet_id="o1"), raw(type={"a": 1}, outlet_id="o1"),  # unhashable types
    raw(type="order.voided", outlet_id="o1"), raw(type="ORDER.PLACED", outlet_id="o1"),
    raw(type="order.placed"), raw(type="order.placed", outlet_id=None), raw(type="order.placed", outlet_id=""),
    raw(type="order.placed", outlet_id=17), raw(type="order.placed", outlet_id=["o1"]),
    raw(type="lead.won", outlet_id="o1"), raw(type="activity.logged", lead_id="L1"),
])
def test_what_has_no_known_type_or_usable_key_goes_to_the_mixed_topic_without_a_key(message):
    assert route(message) == UNROUTED == Route(MIXED_TOPIC, None)


def test_a_repeated_field_counts_as_the_decoder_reads_it_the_last_one():
    message = b'{"event_id":"e","type":"outlet.updated","occurred_at":"' + AT.encode() + b'","outlet_id":"a","outlet_id":"b"}'
    assert route(message).key == b"b" == partition_key(decode_event(message, 1 << 60, KpiSettings())).encode()


def test_routes_agree_with_the_worker_for_generated_traffic_with_every_fault():
    """Accepted events go where the worker would re-route them (no second hop); what goes to
    sales.events unkeyed is what the decoder rejects, so the worker dead-letters it from there."""
    config = generator.GeneratorConfig(seed=7, events=4000, malformed_fraction=0.05)
    settings = KpiSettings()
    as_of = generator.now_us(config)
    unrouted = 0
    for message in generator.generate(config):
        where = route(message.value)
        try:
            event = decode_event(message.value, as_of, settings)
        except Rejected:
            unrouted += where == UNROUTED
            continue
        assert where == Route(TYPE_TOPIC[event.type], partition_key(event).encode())
        assert (where.topic, where.key) == (message.topic, message.key)  # the generator's own keying
    assert unrouted > 0


def test_the_tables_cover_every_event_type_and_input_topic():
    assert set(TYPE_TOPIC) == set(EVENT_TYPES)
    typed = set(INPUT_TOPICS) - {MIXED_TOPIC}
    assert set(TYPE_TOPIC.values()) == typed == set(TOPIC_KEY)
    assert {name for names in FAMILY_TOPICS.values() for name in names} == typed
