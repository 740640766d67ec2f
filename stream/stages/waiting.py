"""Applied events waiting for publication, as counts per 10 ms of Kafka timestamp: how the
worker's `kpi_stream_publish_latency_seconds` observes every applied event once.

An event's latency is from its input message's Kafka timestamp to the send of the publication
round that takes its flush's partials (stream/stages/cadence.py). Stage 1 notes each applied event's
timestamp in its partition's counts; a flush hands them all, merged, to one of its partials
messages (each event is counted by exactly one scope-stage worker); the scope stage observes them
when it publishes the first scope of that message. Events whose flush has nothing to send changed
no published value: they are observed at the flush itself.

Counting per 10 ms instead of carrying each timestamp keeps a flush's share of a partials
message at most ~100 pairs per second of Kafka time, whatever the rate (and at most MAX_PAIRS:
see `encode`). The grid's floor is used, so an observed latency is at most 10 ms above the
event's own.

Pure: times are passed in, no Faust or Kafka here.
"""

from __future__ import annotations

from typing import Iterable, Iterator

GRID_MS = 10
MAX_PAIRS = 1_000  # per partials message: ~20 KB of JSON at most

# timestamp_ms // GRID_MS -> applied events with a Kafka timestamp in that 10 ms
WaitingCounts = dict[int, int]


def note(counts: WaitingCounts, timestamp_ms: int) -> None:
    slot = timestamp_ms // GRID_MS
    counts[slot] = counts.get(slot, 0) + 1


def merge(into: WaitingCounts, counts: WaitingCounts) -> None:
    for slot, events in counts.items():
        into[slot] = into.get(slot, 0) + events


def pairs(counts: WaitingCounts) -> list[tuple[int, int]]:
    """(timestamp_ms, events) on the grid."""
    return [(slot * GRID_MS, events) for slot, events in counts.items()]


def encode(counts: WaitingCounts, max_pairs: int = MAX_PAIRS) -> list[list[int]]:
    """For a partials message: `[[timestamp_ms, events], ...]`. Past `max_pairs` distinct 10 ms
    (a backlog: timestamps spread over minutes) the grid doubles until they fit, so a message
    stays small; the latency of such events is seconds, and its error (the grid) is below it."""
    grid = 1
    while len(counts) > max_pairs:
        grid *= 2
        coarser: WaitingCounts = {}
        for slot, events in counts.items():
            floor = slot - slot % grid
            coarser[floor] = coarser.get(floor, 0) + events
        counts = coarser
    return [[slot * GRID_MS, events] for slot, events in counts.items()]


def decode(encoded: object) -> list[tuple[int, int]]:
    """A partials message's pairs as (timestamp_ms, events); anything else -- no list, a
    malformed pair -- counts nothing, as it cannot be attributed."""
    if not isinstance(encoded, list):
        return []
    decoded = []
    for pair in encoded:
        if isinstance(pair, list) and len(pair) == 2 and all(type(x) is int for x in pair) and pair[1] > 0:
            decoded.append((pair[0], pair[1]))
    return decoded


def ages(waiting: Iterable[tuple[int, int]], now_s: float) -> Iterator[tuple[float, int]]:
    """(seconds since the timestamp, events) for each pair at wall-clock time `now_s`; a
    timestamp after `now_s` (a producer's clock ahead of this worker's) counts as 0."""
    for timestamp_ms, events in waiting:
        yield max(0.0, now_s - timestamp_ms / 1000), events
