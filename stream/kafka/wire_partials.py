"""The scope stage's two formats: partials messages and the scope-partials table.

Partials message (stage 1 -> stage 2, one per scope-stage partition per flush):
    key   `["partials", writer instance]`
    value `{"at": sent at (ms), "k": flush number, "s": [entry, ...], "e": waiting events}`
    entry `[family, scope type, scope id, source partition, generation, sequence, vector(, groups)]`
    ("e", stream/stages/waiting.py's encoding, rides with one message of a flush only)
Scope-partials table, one entry per scope:
    key   `[family, scope type, scope id]`
    value `{"part": own partition, "by": {source: vector}, "ver": {source: [generation, sequence]},
           "per": {source: groups}}`
Vectors are encoded by stream/kafka/wire_vectors.py. `groups` are a scope's calendar period sums
(stream/core/period_views.py): `[[kind position, period index, 1 if lmtd else 0, vector], ...]`,
absent when the source holds none (and from workers configured without periods).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from stream.kafka.tables import stored

ScopeKey = tuple[str, str, str]


def scope_key_bytes(key: ScopeKey) -> bytes:
    """A scope's key as the partials are routed and the table stores it."""
    return orjson.dumps(key)


def scope_key_of_stored(raw_key) -> ScopeKey:
    return tuple(stored(raw_key))


def partials_message_key(instance: str) -> bytes:
    return orjson.dumps(["partials", instance])


def encode_partials(sent_ms: int, flush: int, entries: list[list], events: list | None) -> bytes:
    body = {"at": sent_ms, "k": flush, "s": entries}
    if events is not None:
        body["e"] = events
    return orjson.dumps(body)


@dataclass(slots=True)
class PartialsMessage:
    sent_ms: int
    flush: int
    entries: list[list]
    events: list | None


def decode_partials(value: bytes) -> PartialsMessage:
    body = orjson.loads(value)
    return PartialsMessage(body["at"], body["k"], body["s"], body.get("e"))


def encode_scope_entry(partition: int, encoded_by_source: dict[str, tuple], versions: dict[int, tuple[int, int]],
                       groups_by_source: dict[str, list] | None = None) -> bytes:
    body = {"part": partition, "by": encoded_by_source,
            "ver": {str(source): version for source, version in versions.items()}}
    if groups_by_source:
        body["per"] = groups_by_source
    return orjson.dumps(body)


def decode_scope_entry(value) -> tuple[int, list[tuple[int, tuple[int, int], list, list]]]:
    """(own partition, [(source partition, version, encoded vector, encoded groups), ...])."""
    entry = stored(value)
    versions = entry.get("ver", {})
    groups = entry.get("per", {})
    return entry["part"], [(int(source), tuple(versions.get(source, (-1, -1))), vector, groups.get(source, []))
                           for source, vector in entry["by"].items()]


def encode_groups(groups, encode_vector) -> list:
    """A source's period sums for the wire: `[(GroupKey, vector), ...]` -> JSON-ready lists."""
    return [[position, index, 1 if lmtd else 0, encode_vector(vector)] for (position, index, lmtd), vector in groups]


def decode_groups(encoded: list, decode_vector) -> tuple:
    return tuple(((position, index, bool(lmtd)), tuple(decode_vector(vector)))
                 for position, index, lmtd, vector in encoded)
