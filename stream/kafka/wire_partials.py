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
A scope's targets (spec 9) travel as an entry of family `target.{family}` (the family of their
KPIs, routed with that family's scope) with an empty vector and, in the groups' place,
`[[kpi, kind, kind position, period index, value], ...]`, value a decimal string or null.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

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


TARGET_PREFIX = "target."


def target_board_family(family: str) -> str:
    """The scope-stage family name of a scope's targets of `family`'s KPIs."""
    return TARGET_PREFIX + family


def targets_family(board_family: str) -> str | None:
    """The KPI family whose targets a scope-stage family name holds; None for a KPI family."""
    return board_family[len(TARGET_PREFIX):] if board_family.startswith(TARGET_PREFIX) else None


def encode_targets(targets) -> list:
    return [[kpi, kind, position, index, None if value is None else str(value)]
            for kpi, kind, position, index, value in targets]


def decode_targets(encoded: list) -> tuple:
    return tuple((kpi, kind, position, index, None if value is None else Decimal(value))
                 for kpi, kind, position, index, value in encoded)
