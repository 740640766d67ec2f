"""Exactly one dead letter per rejected input record across kills and rebalances: two workers, one
killed (-9) while rejected records stream in, a third joining and the first leaving later. Records
past a partition's committed offset are re-read by its next owner; the dead letters the previous
owner wrote for them are read back (from the mark committed with the offset) and not written again.
On main this run writes 105 of its 360 dead letters twice."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import WorkerProcess, metric_total, redis_records, unique_names, wait_until, worker_env
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, judge, oracle_kpis

pytestmark = pytest.mark.e2e

PARTITIONS = 4


async def produce_with_coordinates(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> list[tuple[str, int, int]]:
    """Send and return each record's (topic, partition, offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=1_048_576)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for topic, key, value in records]
        return [(meta.topic, meta.partition, meta.offset) for meta in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def dead_letter_sources(bootstrap: str, topic: str) -> list[tuple[str, int, int]]:
    from stream.devtools.tail import read_topic

    rows = await read_topic(bootstrap, topic, timeout_s=3.0, follow=False)
    return [(row["value"]["source"]["topic"], row["value"]["source"]["partition"], row["value"]["source"]["offset"])
            for row in rows]


def test_each_rejected_record_gets_exactly_one_dead_letter_across_a_kill_a_join_and_a_leave(
        kafka_broker, redis_server, tmp_path):
    import redis

    config = generator.GeneratorConfig(seed=3838, events=12_000, malformed_fraction=0.03)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    as_of_us = generator.now_us(config)
    expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state",
                     KPI_CLOCK=as_of, KPI_SESSION_TIMEOUT="6", KPI_PARTITIONS=str(PARTITIONS))
    chooser = random.Random(3839)  # some through sales.events: its router dead-letters too
    records = [(prefix + (m.topic if chooser.random() < 0.8 else "sales.events"), m.key, m.value) for m in messages]
    rejected_at = [i for i, m in enumerate(messages) if judge(m.value, as_of_us, OracleSettings())[2] != "ok"]
    assert len(rejected_at) > 300
    chunks = [records[i::8] for i in range(8)]
    coordinates: list[tuple[str, int, int]] = []
    order: list[int] = [i for c in range(8) for i in range(c, len(records), 8)]

    def send(chunk) -> None:
        coordinates.extend(asyncio.run(produce_with_coordinates(kafka_broker.bootstrap, chunk)))

    first = WorkerProcess(env, tmp_path / "worker-a.log").start()
    second = WorkerProcess(env, tmp_path / "worker-b.log").start()
    workers = [first, second]
    third = None
    client = redis.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: all(w.get("/ready")[0] == 200 for w in workers) or [w.log_tail(3) for w in workers],
                   timeout=120, what="two workers ready")
        send(chunks[0])
        time.sleep(1.5)
        send(chunks[1])
        time.sleep(0.7)
        second.kill()  # mid-stream, with dead letters written past its last commit
        send(chunks[2])
        third = WorkerProcess(env, tmp_path / "worker-c.log").start()  # joins: a rebalance
        workers = [first, third]
        for chunk in chunks[3:5]:
            send(chunk)
            time.sleep(1.0)
        wait_until(lambda: third.get("/ready")[0] == 200 or [third.log_tail(3)], timeout=120, what="third ready")
        send(chunks[5])
        time.sleep(0.7)
        already_written = metric_total(first, "kpi_stream_deadletters_already_written_total")
        first.stop()  # leaves: its partitions go to the third worker
        workers = [third]
        for chunk in chunks[6:]:
            send(chunk)
            time.sleep(1.0)

        def values_match():
            assert third.alive(), third.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        wait_until(values_match, timeout=240, interval=2, what="values equal to the oracle")
        by_index = dict(zip(order, coordinates))
        expected_sources = {by_index[i] for i in rejected_at}

        def one_dead_letter_each():
            counts = Counter(asyncio.run(dead_letter_sources(kafka_broker.bootstrap, prefix + "kpi.deadletter")))
            twice = sorted(source for source, n in counts.items() if n > 1)
            missing = sorted(expected_sources - set(counts))
            extra = sorted(set(counts) - expected_sources)
            return [f"written twice: {twice[:10]} ({len(twice)})"] * bool(twice) + \
                [f"missing: {missing[:10]} ({len(missing)})"] * bool(missing) + \
                [f"not rejected: {extra[:10]}"] * bool(extra)

        wait_until(one_dead_letter_each, timeout=60, interval=3,
                   what=f"exactly one dead letter for each of {len(expected_sources)} rejected records")
        time.sleep(3)  # nothing more arrives later
        assert one_dead_letter_each() == []
        # the read-back did its work: rejected records re-read after the kill or a hand-over
        already_written += metric_total(third, "kpi_stream_deadletters_already_written_total")
        assert already_written > 0, third.log_tail()
    finally:
        for worker in (first, second, third):
            if worker is not None:
                worker.stop()
