"""The scope stage's state: per scope, the latest partial vector of each source partition and
where the scope stands in its publication cadence.

Every piece of a scope's state lives in one `ScopeBoard` so that receiving (`receive`),
choosing what to publish (`due`), taking a scope for publication (`take`) and letting a scope go
(`withdraw`) keep them in step. Pure: time and flush numbers are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from stream.core.period_views import sum_groups
from stream.stages.cadence import due_for_publication, flush_published

ScopeKey = tuple[str, str, str]  # (family, scope type, scope id)
Version = tuple[int, int]  # (consumer-group generation, sequence) of a source's partial


def sum_vectors(vectors) -> list:
    vectors = list(vectors)
    total = list(vectors[0])
    for vector in vectors[1:]:
        for index, x in enumerate(vector):
            if x:
                total[index] += x
    return total


@dataclass(slots=True)
class ScopePartials:
    """A scope's latest partial vector from each source partition. The vectors are tuples: the
    cyclic GC stops walking a tuple of numbers and strings after its first pass, but walks every
    element of a list in each full collection (two vectors of ~200 fields per source and scope)."""

    own_partition: int
    by_source: dict[int, tuple] = field(default_factory=dict)
    encoded: dict[str, tuple] = field(default_factory=dict)  # by_source as stored: JSON-ready, keyed by str
    versions: dict[int, Version] = field(default_factory=dict)
    # calendar period sums per source, `((GroupKey, vector), ...)` (stream/core/period_views.py), and
    # as stored; only sources that hold some
    groups: dict[int, tuple] = field(default_factory=dict)
    encoded_groups: dict[str, list] = field(default_factory=dict)

    def is_newer(self, source: int, version: Version) -> bool:
        """Whether a partial of `version` from `source` is not older than the one kept: a previous
        owner's late partial is older than the new owner's."""
        return version >= self.versions.get(source, (-1, -1))

    def keep(self, source: int, version: Version, vector: Iterable, encoded_vector: Iterable,
             groups: tuple = (), encoded_groups: list | None = None) -> None:
        """`source`'s partial (its vector and period sums) becomes the one this scope sums."""
        self.by_source[source] = tuple(vector)
        self.encoded[str(source)] = tuple(encoded_vector)
        self.versions[source] = version
        if groups:
            self.groups[source] = groups
            self.encoded_groups[str(source)] = encoded_groups
        elif self.groups:
            self.groups.pop(source, None)
            self.encoded_groups.pop(str(source), None)

    def total(self) -> list:
        return sum_vectors(self.by_source.values())

    def total_groups(self) -> dict:
        return sum_groups(self.groups.values())


@dataclass(slots=True)
class Taken:
    """What publishing a scope needs, taken off the board."""

    partials: ScopePartials | None
    received_at: float | None  # time.time() of the first partial since its last publication
    waiting_events: list[tuple[int, int]]  # applied events published with it (stream/stages/waiting.py)
    evaluated: tuple | None  # the summed vector its values were last evaluated from


class ScopeBoard:
    def __init__(self) -> None:
        self.scopes: dict[ScopeKey, ScopePartials] = {}
        self.dirty: set[ScopeKey] = set()
        # the applied events observed in the publish latency when the scope is next published: a
        # flush's events ride with the first scope of one message
        self._waiting_events: dict[ScopeKey, list[tuple[int, int]]] = {}
        self._received_at: dict[ScopeKey, float] = {}
        # the newest flush (stream/stages/cadence.py) its received partials come from, and the
        # flush it was last published for: a scope is published at most once per flush period
        self._pending_flush: dict[ScopeKey, int] = {}
        self._published_flush: dict[ScopeKey, int] = {}
        # the summed vector its values were last evaluated from: only groups that moved are
        # evaluated again. A tuple, which the cyclic GC stops walking.
        self._evaluated: dict[ScopeKey, tuple] = {}

    def __len__(self) -> int:
        return len(self.scopes)

    def get(self, key: ScopeKey) -> ScopePartials | None:
        return self.scopes.get(key)

    def place(self, key: ScopeKey, partials: ScopePartials) -> None:
        """Hold `partials` for `key` (received first, or restored from the table)."""
        self.scopes[key] = partials

    def restore(self, key: ScopeKey, partials: ScopePartials) -> None:
        """A scope read back from the table after recovery: published again."""
        self.scopes[key] = partials
        self.dirty.add(key)

    def receive(self, key: ScopeKey, received_at: float, flush: int, events: list[tuple[int, int]]) -> None:
        """A partial of flush `flush` was kept for `key`: the scope is due for publication."""
        self.dirty.add(key)
        self._received_at.setdefault(key, received_at)
        if flush > self._pending_flush.get(key, flush - 1):
            self._pending_flush[key] = flush
        if events:
            self._waiting_events.setdefault(key, []).extend(events)

    def mark_dirty(self, keys: Iterable[ScopeKey]) -> None:
        """These scopes are published again (their values moved with as_of alone)."""
        self.dirty.update(key for key in keys if key in self.scopes)

    def mark_unpublished_dirty(self, family: str, period: int) -> None:
        """Every scope of `family` not published in flush period `period` is published again
        (lead ages move with `as_of` itself)."""
        published = self._published_flush
        self.dirty.update(key for key in self.scopes
                          if key[0] == family and published.get(key, period - 1) < period)

    def due(self, now: float, period: int, interval: float, settle: float) -> list[ScopeKey]:
        pending, published, received = self._pending_flush, self._published_flush, self._received_at
        return [key for key in self.dirty
                if due_for_publication(pending.get(key, period), published.get(key), received.get(key), now,
                                       interval, settle)]

    def take(self, key: ScopeKey, period: int, now: float, interval: float) -> Taken:
        """Take a due scope for publication in `period`: it is no longer dirty, and counts as
        published for the flush its partials came from."""
        self.dirty.discard(key)
        self._published_flush[key] = flush_published(self._pending_flush.pop(key, period),
                                                      self._published_flush.get(key), now, interval)
        return Taken(self.scopes.get(key), self._received_at.pop(key, None),
                     self._waiting_events.pop(key, None) or [], self._evaluated.get(key))

    def evaluated(self, key: ScopeKey, total: list) -> None:
        self._evaluated[key] = tuple(total)

    def withdraw(self, key: ScopeKey) -> None:
        """Forget everything about `key` (its partition went to another worker)."""
        self.scopes.pop(key, None)
        self.dirty.discard(key)
        for state in (self._waiting_events, self._received_at, self._pending_flush, self._published_flush,
                      self._evaluated):
            state.pop(key, None)

    def keys_in_partitions(self, partitions: set[int], inside: bool = True) -> list[ScopeKey]:
        return [key for key, partials in self.scopes.items() if (partials.own_partition in partitions) == inside]
