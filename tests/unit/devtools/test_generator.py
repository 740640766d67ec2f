"""The synthetic traffic is deterministic and has what the tests rely on: every rejection
reason, byte-identical duplicates, late deliveries, keys matching the spec's topics."""

from __future__ import annotations

from collections import Counter

import orjson

from stream.core.routing import TYPE_TOPIC, key_for
from stream.devtools import generator
from stream.core.config import KpiSettings
from stream.core.decode import REJECT_REASONS, Rejected, decode_event

CONFIG = generator.GeneratorConfig(seed=5, events=20_000)
MESSAGES = list(generator.generate(CONFIG))


def _decoded():
    now = generator.now_us(CONFIG)
    for message in MESSAGES:
        try:
            yield message, decode_event(message.value, now, KpiSettings())
        except Rejected as rejected:
            yield message, rejected


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    again = list(generator.generate(CONFIG))
    assert again == MESSAGES
    other = list(generator.generate(generator.GeneratorConfig(seed=6, events=20_000)))
    assert other != MESSAGES
    assert len(MESSAGES) == 20_000


def test_every_rejection_reason_appears():
    reasons = Counter(r.reason for _, r in _decoded() if isinstance(r, Rejected))
    assert set(reasons) == set(REJECT_REASONS)


def test_duplicates_are_byte_identical_resends_of_an_earlier_message():
    seen: set[bytes] = set()
    repeats = 0
    for message in MESSAGES:
        if message.value in seen:
            repeats += 1
        seen.add(message.value)
    assert 0.01 * len(MESSAGES) <= repeats <= 0.03 * len(MESSAGES)


def test_some_events_arrive_more_than_a_day_after_later_ones():
    latest = None
    late = 0
    for _, event in _decoded():
        if isinstance(event, Rejected):
            continue
        if latest is not None and latest - event.occurred_us > 86_400_000_000:
            late += 1
        latest = event.occurred_us if latest is None else max(latest, event.occurred_us)
    assert late >= 0.005 * len(MESSAGES)


def test_valid_events_are_on_their_topic_keyed_by_their_entity_and_not_in_the_future():
    now = generator.now_us(CONFIG)
    types = Counter()
    for message, event in _decoded():
        if isinstance(event, Rejected):
            continue
        types[event.type] += 1
        assert message.topic == TYPE_TOPIC[event.type]
        doc = orjson.loads(message.value)
        assert message.key == key_for(message.topic, doc).encode()
        assert event.occurred_us <= now
    assert {"outlet.onboarded", "outlet.updated", "order.placed", "visit.completed", "lead.created",
            "lead.updated", "lead.won", "lead.lost", "activity.logged", "target.set"} <= set(types)


def test_jsonl_keeps_every_message_byte_for_byte(tmp_path):
    path = tmp_path / "events.jsonl"
    assert generator.write_jsonl(MESSAGES, path) == len(MESSAGES)
    assert path.read_bytes().split(b"\n")[:-1] == [m.value for m in MESSAGES]
