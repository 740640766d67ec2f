"""`python -m stream.devtools.tail` prints what a topic holds and exits, even while it keeps
growing (the demo's kpi.updates never goes quiet); --limit keeps the last N; --follow goes on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from stream.devtools import tail


class GrowingTopic:
    """A fake consumer over a topic that gets a new message on every fetch, forever."""

    def __init__(self, topic: str, sizes: dict[int, int], begin: dict[int, int] | None = None) -> None:
        self.topic = topic
        self.logs = {p: [self._record(p, o) for o in range(n)] for p, n in sizes.items()}
        self.begin = begin or {p: 0 for p in sizes}
        self.positions: dict[TopicPartition, int] = {}
        self.fetches = 0

    def _record(self, partition: int, offset: int):
        return SimpleNamespace(partition=partition, offset=offset, timestamp=1000 * offset + partition,
                               key=f"k{partition}-{offset % 3}".encode(), value=b'{"n": %d}' % offset, headers=[])

    def partitions_for_topic(self, topic):
        return set(self.logs) if topic == self.topic else None

    @property
    def _client(self):
        async def fetch_all_metadata():
            return SimpleNamespace(partitions_for_topic=lambda topic: None)

        return SimpleNamespace(fetch_all_metadata=fetch_all_metadata)

    def unsubscribe(self):
        pass

    def assign(self, tps):
        self.positions = {tp: 0 for tp in tps}

    async def beginning_offsets(self, tps):
        return {tp: self.begin[tp.partition] for tp in tps}

    async def end_offsets(self, tps):
        return {tp: len(self.logs[tp.partition]) for tp in tps}

    def seek(self, tp, offset):
        self.positions[tp] = offset

    async def position(self, tp):
        return self.positions[tp]

    async def getmany(self, *partitions, timeout_ms=0, max_records=None):
        self.fetches += 1
        for log in self.logs.values():  # the producer never stops
            log.append(self._record(log[-1].partition if log else 0, len(log)))
        batch = {}
        for tp in partitions or self.positions:
            records = self.logs[tp.partition][self.positions[tp]:self.positions[tp] + 2]
            if records:
                batch[tp] = records
                self.positions[tp] += len(records)
        if self.fetches > 200:
            raise AssertionError("still reading: it should have stopped at the end found at the start")
        return batch


def run(coroutine):
    return asyncio.run(coroutine)


def test_prints_everything_up_to_the_end_found_at_the_start_and_stops_on_a_busy_topic():
    consumer = GrowingTopic("kpi.updates", {0: 5, 1: 3, 2: 0})
    rows = run(tail.read_partitions(consumer, "kpi.updates", timeout_s=3.0, follow=False))
    assert sorted((r["partition"], r["offset"]) for r in rows) == [(0, o) for o in range(5)] + [(1, o) for o in range(3)]
    assert consumer.fetches < 10
    assert rows[0]["value"] == {"n": 0} and set(rows[0]) >= {"key", "value", "headers", "partition", "offset"}


def test_limit_keeps_the_last_n_by_timestamp_over_all_partitions():
    consumer = GrowingTopic("kpi.updates", {0: 50, 1: 49}, begin={0: 10, 1: 0})
    rows = run(tail.read_partitions(consumer, "kpi.updates", timeout_s=3.0, follow=False, limit=3))
    assert [(r["partition"], r["offset"]) for r in rows] == [(0, 48), (1, 48), (0, 49)]
    assert consumer.fetches <= 3  # it read only the tails


def test_key_filter_with_limit_looks_at_the_whole_topic():
    consumer = GrowingTopic("kpi.updates", {0: 30})
    rows = run(tail.read_partitions(consumer, "kpi.updates", timeout_s=3.0, follow=False, limit=2, key_contains="k0-1"))
    assert [r["offset"] for r in rows] == [25, 28]


def test_a_missing_or_empty_topic_gives_nothing_at_once():
    assert run(tail.read_partitions(GrowingTopic("other", {0: 4}), "kpi.updates", timeout_s=3.0, follow=False)) == []

    class Empty(GrowingTopic):
        async def getmany(self, *partitions, timeout_ms=0, max_records=None):
            raise AssertionError("nothing to fetch")

    assert run(tail.read_partitions(Empty("t", {0: 0, 1: 0}), "t", timeout_s=3.0, follow=False)) == []


def test_follow_prints_the_last_n_then_what_comes():
    consumer = GrowingTopic("t", {0: 10})
    seen = []

    class Enough(Exception):
        pass

    def emit(row):
        seen.append(row["offset"])
        if len(seen) == 6:
            raise Enough

    with pytest.raises(Enough):
        run(tail.read_partitions(consumer, "t", timeout_s=0.1, follow=True, limit=2, emit=emit))
    assert seen[:2] == [8, 9] and seen[2:] == sorted(seen[2:]) and seen[2] >= 10


def test_the_command_prints_json_lines_and_exits(monkeypatch, capsysbinary):
    async def fake_read_topic(bootstrap, topic, **options):
        assert (bootstrap, topic, options["limit"], options["follow"]) == ("127.0.0.1:1", "kpi.updates", 2, False)
        return [{"key": "a", "value": 1}, {"key": "b", "value": 2}]

    monkeypatch.setattr(tail, "read_topic", fake_read_topic)
    assert tail.main(["--kafka", "127.0.0.1:1", "kpi.updates", "--limit", "2"]) == 0
    assert capsysbinary.readouterr().out == b'{"key":"a","value":1}\n{"key":"b","value":2}\n'
