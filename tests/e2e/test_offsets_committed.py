"""Once the worker has applied and written everything, its committed input offsets reach the end
of every input partition: a restart then re-reads nothing (stream/worker/app.py
`_commit_only_applied_offsets`). Values stay right either way -- a re-read is deduped -- so only
the offsets show it: faust forgets the acked offsets a capped commit passed over, and without
handing them back a partition's commits stop at the first cap for good."""

from __future__ import annotations

import asyncio

import pytest

from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from stream.kafka.topics import INPUT_TOPICS
from tests.e2e.harness import OracleCheck, WorkerProcess, metric_total, unique_names, wait_until, worker_env

pytestmark = pytest.mark.e2e

PARTITIONS = 4  # worker_env's KPI_PARTITIONS: the service creates every input topic with as many


async def commit_lag(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """Messages between each input partition's committed offset and its end, where any."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = [TopicPartition(topic, p) for topic in topics for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    lag = {}
    for tp, end in ends.items():
        meta = committed.get(tp)
        behind = end - (meta.offset if meta is not None and meta.offset >= 0 else 0)
        if behind:
            lag[f"{tp.topic}[{tp.partition}]"] = behind
    return lag


def test_committed_offsets_reach_the_end_of_every_input_partition(kafka_broker, redis_server, tmp_path):
    import redis

    config = generator.GeneratorConfig(seed=5, events=30_000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of)
    check = OracleCheck(kafka_broker.bootstrap, redis.Redis.from_url(redis_server.url), prefix, as_of)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        check.produce(messages)
        check.wait_for_redis(worker)
        assert metric_total(worker, "kpi_stream_events_consumed_total") >= len(messages)
        topics = [prefix + name for name in INPUT_TOPICS]

        def uncommitted():
            lag = asyncio.run(commit_lag(kafka_broker.bootstrap, app_id, topics))
            return [f"{name}: {behind} behind" for name, behind in sorted(lag.items())]

        wait_until(uncommitted, timeout=60, interval=2, what="committed offsets at the end of every input partition")
    finally:
        worker.stop()
