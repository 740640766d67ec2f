"""Bad input at volume: 100,000+ random and mutated inputs through the decoder. Every one is
applied (an event comes back) or rejected with one of the spec's reasons; nothing else escapes,
every rejection makes a dead-letter record, and the same bytes always get the same outcome.

A deterministic mutation fuzzer (random.Random with fixed seeds) over a corpus of generated valid
events of every type, plus purely random bytes.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import orjson
import pytest

from stream.devtools import generator
from stream.core.config import KpiSettings
from stream.core.decode import REJECT_REASONS, Rejected, decode_event, rejection_record
from stream.core.timeparse import parse_rfc3339_us

pytestmark = pytest.mark.unit

SETTINGS = KpiSettings()
NOW = parse_rfc3339_us("2026-11-24T00:00:00Z")
INPUTS = 110_000

ODD_VALUES = [
    None, True, False, 0, -1, -5, 1e308, -1e308, 2**64, 1.5, "", " ", "x" * 300, "12.50", "-3", "1e3", "NaN",
    "Infinity", "0.000000001", [], [1, 2], {}, {"a": {"b": [None]}}, "2026-11-24T00:00:00Z",
    "2026-11-24T24:00:00Z", "2026-11-24T23:59:60Z", "2026-02-30T00:00:00Z", "2026-11-24 00:00:00Z",
    "2026-11-24T00:00:00", "2099-01-01T00:00:00Z", "1970-01-01T00:00:00+25:00", "\ud800", "USD", "usd", "EUR",
    "order.placed", "lead.won", "activity.logged", "call", "bogus.type",
]
TYPES = ["outlet.onboarded", "outlet.updated", "order.placed", "visit.completed", "lead.created", "lead.updated",
         "lead.won", "lead.lost", "activity.logged", "order.cancelled", "", 7, None]


def corpus() -> list[dict]:
    docs = []
    for message in generator.generate(generator.GeneratorConfig(seed=11, events=3000, malformed_fraction=0.0)):
        doc = orjson.loads(message.value)
        if isinstance(doc, dict):
            docs.append(doc)
    assert {d["type"] for d in docs} >= {"order.placed", "visit.completed", "lead.created", "activity.logged"}
    return docs


def mutate_document(doc: dict, rng: random.Random) -> bytes:
    doc = dict(doc)
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        keys = list(doc)
        if roll < 0.25 and keys:
            del doc[rng.choice(keys)]
        elif roll < 0.55 and keys:
            doc[rng.choice(keys)] = rng.choice(ODD_VALUES)
        elif roll < 0.65:
            doc["type"] = rng.choice(TYPES)
        elif roll < 0.75:
            doc[rng.choice(["extra", "amount", "lines", "currency", "value", "stage", "kind"])] = rng.choice(ODD_VALUES)
        elif roll < 0.85:
            nested: object = doc
            for _ in range(rng.randint(1, 200)):
                nested = [nested]
            return json.dumps(nested).encode()
        else:
            doc["pad"] = "y" * rng.choice([10, 70_000])
    # the standard library writes what orjson refuses (integers past 64 bits, lone surrogates)
    return json.dumps(doc).encode()


def mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.3 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif roll < 0.5 and data:
            del data[rng.randrange(len(data)):]
        elif roll < 0.7:
            at = rng.randrange(len(data) + 1)
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif roll < 0.8:
            data[0:0] = b"\xef\xbb\xbf"
        else:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.choice([b"{", b"}", b"[", b'"', b",", b":", b"null", b"\\u0000", b"\\ud800"])
    return bytes(data)


def inputs(count: int, seed: int):
    rng = random.Random(seed)
    docs = corpus()
    for n in range(count):
        roll = rng.random()
        doc = rng.choice(docs)
        if roll < 0.15:
            yield orjson.dumps(doc)  # valid as generated
        elif roll < 0.60:
            yield mutate_document(doc, rng)
        elif roll < 0.95:
            yield mutate_bytes(orjson.dumps(doc), rng)
        else:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))


def outcome(raw: bytes) -> str:
    try:
        decode_event(raw, NOW, SETTINGS)
    except Rejected as rejected:
        return rejected.reason
    return "applied"


def test_hundred_thousand_mutated_inputs_are_applied_or_rejected_with_a_spec_reason():
    seen: Counter[str] = Counter()
    escaped: list[str] = []
    for raw in inputs(INPUTS, seed=20261124):
        try:
            decode_event(raw, NOW, SETTINGS)
            seen["applied"] += 1
        except Rejected as rejected:
            assert rejected.reason in REJECT_REASONS, (rejected.reason, raw[:200])
            assert rejected.detail
            seen[rejected.reason] += 1
            record = rejection_record(raw, rejected.reason, rejected.detail, topic="sales.orders", partition=0, offset=1)
            assert record["reason"] == rejected.reason
            orjson.dumps(record)
        except Exception as error:  # noqa: BLE001 - exactly what must never happen
            escaped.append(f"{type(error).__name__}: {error} for {raw[:200]!r}")
    assert escaped == []
    assert sum(seen.values()) == INPUTS
    assert seen["applied"] > INPUTS * 0.1
    # The mutations reach every reason of the spec (with these seeds: malformed_json 42,039,
    # applied 29,649, ... future_event 41, currency_mismatch 4).
    assert set(REJECT_REASONS) - set(seen) == set(), seen


def test_future_event_is_rejected_with_its_reason_among_fuzzed_timestamps():
    rng = random.Random(3)
    reasons = Counter()
    for _ in range(2000):
        doc = {"event_id": "f", "type": "activity.logged", "rep_id": "r", "kind": "call",
               "occurred_at": f"2026-11-24T{rng.randrange(0, 24):02d}:{rng.randrange(60):02d}:00Z"}
        reasons[outcome(orjson.dumps(doc))] += 1
    assert set(reasons) == {"applied", "future_event"}


def test_the_same_bytes_always_get_the_same_outcome():
    sample = list(inputs(5000, seed=7))
    assert [outcome(raw) for raw in sample] == [outcome(raw) for raw in sample]
