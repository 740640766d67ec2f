"""stream/stages/waiting.py: applied events counted per 10 ms of Kafka timestamp, as they travel from a
flush to the publication that observes them in kpi_stream_publish_latency_seconds."""

from __future__ import annotations

import random

import orjson

from stream.stages import waiting


def _counted(timestamps: list[int]) -> waiting.WaitingCounts:
    counts: waiting.WaitingCounts = {}
    for timestamp_ms in timestamps:
        waiting.note(counts, timestamp_ms)
    return counts


def test_every_noted_event_arrives_in_the_message_once_on_the_10_ms_floor_of_its_timestamp():
    rng = random.Random(5)
    timestamps = [1_764_000_000_000 + rng.randint(0, 3_000) for _ in range(5_000)]
    partitions = [_counted(timestamps[i::4]) for i in range(4)]
    flush: waiting.WaitingCounts = {}
    for counts in partitions:
        waiting.merge(flush, counts)
    pairs = waiting.decode(orjson.loads(orjson.dumps(waiting.encode(flush))))
    assert sum(events for _, events in pairs) == len(timestamps)
    by_floor: dict[int, int] = {}
    for timestamp_ms in timestamps:
        by_floor[timestamp_ms - timestamp_ms % 10] = by_floor.get(timestamp_ms - timestamp_ms % 10, 0) + 1
    assert dict(pairs) == by_floor


def test_ages_are_seconds_since_the_floor_and_never_negative():
    pairs = [(1_000_000, 3), (1_000_500, 1), (1_002_000, 2)]
    assert list(waiting.ages(pairs, now_s=1_001.25)) == [(1.25, 3), (0.75, 1), (0.0, 2)]


def test_a_backlog_spread_over_minutes_coarsens_the_grid_to_fit_a_message_and_keeps_every_event():
    timestamps = list(range(1_764_000_000_000, 1_764_000_000_000 + 600_000, 7))  # 10 minutes, 85,715 events
    counts = _counted(timestamps)
    assert len(counts) > waiting.MAX_PAIRS
    encoded = waiting.encode(counts)
    assert len(encoded) <= waiting.MAX_PAIRS
    assert sum(events for _, events in encoded) == len(timestamps)
    # each pair's timestamp is the floor of the events it stands for, on a grid of a power of two
    # times 10 ms: never later than any of them, and no coarser than needed
    floors = sorted(timestamp_ms for timestamp_ms, _ in encoded)
    width = min(b - a for a, b in zip(floors, floors[1:]))
    assert width in {10 * 2 ** k for k in range(1, 12)}
    assert 600_000 / width <= waiting.MAX_PAIRS < 2 * 600_000 / width + 2
    present = set(floors)
    for timestamp_ms in timestamps[::997]:
        assert timestamp_ms - timestamp_ms % width in present


def test_a_flush_within_the_pair_limit_keeps_the_10_ms_grid():
    counts = _counted(list(range(0, 10 * waiting.MAX_PAIRS, 10)))
    assert waiting.encode(counts) == [[slot * 10, 1] for slot in range(waiting.MAX_PAIRS)]


def test_what_cannot_be_attributed_counts_nothing():
    assert waiting.decode(None) == []  # a partials message of an older worker
    assert waiting.decode({"0": 1}) == []
    assert waiting.decode([[10, 2], [20], [30, "1"], [40, 0], [50, -1], "x", [60, 1.5], [70, 1]]) == [(10, 2), (70, 1)]
