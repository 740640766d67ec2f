"""Input from a producer that does not partition as Kafka's Java client does: confluent-kafka
(librdkafka's default partitioner, CRC32 of the key) writes the same outlets' events to their typed
topics and to the mixed topic sales.events at once. The worker forwards every record that arrived
off its entity's murmur2 partition before any engine sees it, so one outlet's events still meet in
one engine, and every value equals the oracle."""

from __future__ import annotations

import random

import pytest

from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from stream.stages.outgoing import kafka_partition
from tests.e2e.harness import WorkerProcess, metric_total, redis_records, unique_names, wait_until, worker_env
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e

PARTITIONS = 4


def produce_with_librdkafka(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, int]]:
    """Send with confluent-kafka's defaults (partitioner `consistent_random`: CRC32 of the key);
    returns (topic, key, partition) of every delivered record."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    delivered: list[tuple[str, bytes, int]] = []
    failed: list[str] = []

    def report(error, message) -> None:
        if error is not None:
            failed.append(str(error))
        else:
            delivered.append((message.topic(), message.key(), message.partition()))

    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:  # its queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not failed, failed[:5]
    return delivered


def test_a_crc32_producer_writing_typed_topics_and_sales_events_at_once_gives_the_oracle_values(
        kafka_broker, redis_server, tmp_path):
    import redis

    config = generator.GeneratorConfig(seed=3802, events=8000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state",
                     KPI_CLOCK=as_of, KPI_PARTITIONS=str(PARTITIONS))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        # the worker creates the topics (PARTITIONS each); a producer first would auto-create them
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        # each event, at random, to its own topic or to sales.events: one outlet's events take both paths
        chooser = random.Random(38)
        records = [(prefix + (m.topic if chooser.random() < 0.6 else "sales.events"), m.key, m.value)
                   for m in messages]
        delivered = produce_with_librdkafka(kafka_broker.bootstrap, records)
        typed = [(topic, key, p) for topic, key, p in delivered if not topic.endswith("sales.events")]
        off_murmur2 = [(topic, key, p) for topic, key, p in typed if p != kafka_partition(key, PARTITIONS)]
        assert len(off_murmur2) > len(typed) / 2, "librdkafka's partitioner placed the keys as murmur2 does"

        def values_match():
            assert worker.alive(), worker.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        try:
            wait_until(values_match, timeout=180, interval=2, what="values equal to the oracle")
        except AssertionError:
            problems = kpi_differences(redis_records(client, prefix), expected, limit=100_000)
            (tmp_path / "differences.txt").write_text("\n".join(problems))
            raise
        for name in ("sales.orders", "sales.visits", "sales.outlets", "sales.leads", "sales.activities", "sales.events"):
            assert metric_total(worker, "kpi_stream_records_repartitioned_total", topic=prefix + name) > 0, name
        assert "its producer partitions another way" in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
