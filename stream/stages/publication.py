"""The scope stage's publication (spec 5.1): which of a scope's values moved since they were last
published, and those as kpi.updates messages, Redis bodies and gauge values.

Every scope whose vector moved is republished once per interval, so the update rate follows the
number of scopes, not the event rate: at 2,500 events/s of live traffic, ~4,700 updates/s with
the benchmarks' 60 reps and ~23,000 with 3,000 reps (docs/performance.md, "Publication and the
field force"). The cost per update
decides how much of a core publication takes at a real field force's scale, and what is kept per
key decides what the cyclic GC walks. What never changes for a key -- its text, its Kafka
partition, the JSON around its numbers -- is built the first time the key is seen and kept
(`KeyForm`); an update then costs one small orjson call, a comparison, a join and a hash.

Bodies and headers are byte for byte those of `encode(update_message(...))` and
`cloudevent_headers(...)` in stream/stages/updates.py, the readable form of the message
(tests/unit/stages/test_publication.py holds them together).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import orjson

from stream.stages.outgoing import Outgoing, kafka_partition
from stream.core.kpis import KpiValue
from stream.stages.updates import SPEC_VERSION_HEADER, RoundStamp, encode, update_key, update_message

ScopeKey = tuple[str, str, str]  # (family, scope type, scope id): one scope of the scope stage


# What every message of one update key shares, as a plain tuple: the cyclic GC drops a tuple of
# strings, bytes and ints from its walk after one collection, but walks a NamedTuple (a tuple
# subclass) in every full collection -- a field force has ~200,000 keys.
KeyForm = tuple[str, int, int, bytes, bytes]
KEY, PARTITIONS, PARTITION, HEAD, TAIL = range(5)
# KEY        the update key (spec 5.1)
# PARTITIONS kpi.updates' partition count when PARTITION was computed
# PARTITION  Kafka's default partitioner for the key, computed once (murmur2 in Python, ~11 us)
# HEAD       the body up to `"as_of":`
# TAIL       from `,"horizon":` up to `"computed_at":`

# The message with markers where a round's instants and a value's numbers go: a key's HEAD and
# TAIL are cut from it, so the layout stays update_message's alone.
_MARKED_STAMP = RoundStamp(as_of="<as_of>", computed_at="<computed_at>", shared_headers=())
_AS_OF_MARK = b'"<as_of>",'
_NO_NUMBERS = b'"value":null,"numerator":null,"denominator":null'
_COMPUTED_AT_MARK = b'"<computed_at>"}'


def key_form(value: KpiValue, partitions: int) -> KeyForm:
    marked = encode(update_message(value._replace(value=None, numerator=None, denominator=None), _MARKED_STAMP))
    # the last marks: only scope_id, before them, holds arbitrary text
    head, after_as_of = marked.rsplit(_AS_OF_MARK, 1)
    if not (after_as_of.startswith(_NO_NUMBERS) and after_as_of.endswith(_COMPUTED_AT_MARK)):
        raise AssertionError(f"update_message's layout moved: {marked!r}")
    tail = after_as_of[len(_NO_NUMBERS):-len(_COMPUTED_AT_MARK)]
    key = update_key(value)
    return key, partitions, kafka_partition(key.encode(), partitions), head, tail


@dataclass(slots=True)
class RoundOutput:
    """One publication round: its stamp in the forms a body needs, and what it sends."""

    stamp: RoundStamp
    partitions: int  # of kpi.updates
    as_of_json: bytes = b""  # `"2026-...Z",`: between `"as_of":` and the numbers
    computed_at_json: bytes = b""  # `"2026-...Z"}`: the body's end
    ce_id_suffix: bytes = b""  # `@2026-...Z`: hashed after the key into ce_id
    outgoing: list[Outgoing] = field(default_factory=list)  # to kpi.updates
    redis: dict[str, bytes] = field(default_factory=dict)  # update key -> body

    def __post_init__(self) -> None:
        self.as_of_json = orjson.dumps(self.stamp.as_of) + b","
        self.computed_at_json = orjson.dumps(self.stamp.computed_at) + b"}"
        self.ce_id_suffix = f"@{self.stamp.as_of}".encode()


class GaugeSink(Protocol):
    """Where published values go as gauges (stream/worker/sinks.py KpiGauges)."""

    export_scopes: tuple[str, ...]

    def set(self, value: KpiValue) -> None: ...

    def remove(self, value: KpiValue) -> None: ...


class Publisher:
    """Per scope, the forms of its keys; per key, the numbers last published and the body."""

    def __init__(self, gauges: GaugeSink) -> None:
        self.gauges = gauges
        # scope -> (kpi, window, horizon, kind) -> the form of its key
        self.forms: dict[ScopeKey, dict[tuple, KeyForm]] = {}
        # update key -> its value, numerator and denominator last published, as JSON: a key
        # is sent again only when these move. Bytes, not a tuple: a dict that keeps receiving
        # fresh tuples stays on the cyclic GC's walk, all ~200,000 entries of a field force's
        # keys in every full collection; a dict of strings and bytes is never walked.
        self.last: dict[str, bytes] = {}
        # update key -> latest body, for every scope this worker publishes: rewritten in full to
        # Redis after an outage (Redis may come back empty)
        self.latest_bodies: dict[str, bytes] = {}

    def publish(self, scope: ScopeKey, values: Iterable[KpiValue], out: RoundOutput) -> int:
        """Add those of the scope's values that moved to `out`; returns how many."""
        forms = self.forms.get(scope)
        if forms is None:
            forms = self.forms[scope] = {}
        exported = scope[1] in self.gauges.export_scopes
        last, latest_bodies, outgoing, redis = self.last, self.latest_bodies, out.outgoing, out.redis
        dumps, join, sha256 = orjson.dumps, b"".join, hashlib.sha256
        count = 0
        for value in values:
            identity = (value[0], value[1], value[7], value[8])  # kpi, window, horizon, kind
            form = forms.get(identity)
            if form is None or form[PARTITIONS] != out.partitions:
                form = forms[identity] = key_form(value, out.partitions)
            key = form[KEY]
            # a slice is a copy at its own size: orjson's output holds a 4 KB buffer (stream/core/jsonbytes.py)
            numbers = dumps({"value": value[4], "numerator": value[5], "denominator": value[6]})[1:-1]
            if last.get(key) == numbers:
                continue
            last[key] = numbers
            body = join((form[HEAD], out.as_of_json, numbers, form[TAIL], out.computed_at_json))
            key_bytes = key.encode()
            ce_id = sha256(key_bytes + out.ce_id_suffix).hexdigest()[:32].encode()
            outgoing.append(Outgoing(form[PARTITION], key_bytes, body,
                                     (SPEC_VERSION_HEADER, ("ce_id", ce_id), *out.stamp.shared_headers)))
            redis[key] = body
            latest_bodies[key] = body
            if exported:
                self.gauges.set(value)
            count += 1
        return count

    def withdraw(self, scope: ScopeKey) -> None:
        """Another worker publishes this scope now: forget what was published for it here, and
        stop exporting its gauges (they would go stale)."""
        _family, scope_type, scope_id = scope
        for (kpi, window, horizon, kind), form in self.forms.pop(scope, {}).items():
            self.gauges.remove(KpiValue(kpi, window, scope_type, scope_id, None, horizon=horizon, kind=kind))
            self.last.pop(form[KEY], None)
            self.latest_bodies.pop(form[KEY], None)

    def forget_windows(self, keep) -> int:
        """Forget the keys whose window `keep(window)` rejects (calendar periods that left the
        published set, spec 8: never republished, never tombstoned); how many."""
        forgotten = 0
        for forms in self.forms.values():
            gone = [identity for identity in forms if identity[1] is not None and not keep(identity[1])]
            for identity in gone:
                key = forms.pop(identity)[KEY]
                self.last.pop(key, None)
                self.latest_bodies.pop(key, None)
            forgotten += len(gone)
        return forgotten
