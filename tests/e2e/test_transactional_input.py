"""Input written by a transactional producer: each commit leaves a marker at an offset with no
record, so partition offsets have gaps. The worker must tell those from offsets it skipped
(stream/kafka/offsets.py): it checks the log, accepts real gaps, applies everything and commits."""

from __future__ import annotations

import asyncio

import pytest

from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import WorkerProcess, counter_total, redis_records, unique_names, wait_until, worker_env
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e


async def _produce_in_transactions(bootstrap: str, records: list[tuple[str, bytes | None, bytes]], size: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"upstream-{id(records)}")
    await producer.start()
    try:
        for start in range(0, len(records), size):
            async with producer.transaction():
                for topic, key, value in records[start:start + size]:
                    await producer.send(topic, key=key, value=value)
    finally:
        await producer.stop()


def test_transaction_markers_in_the_input_are_accepted_as_gaps_and_every_event_is_applied(
        kafka_broker, redis_server, tmp_path):
    import redis

    config = generator.GeneratorConfig(seed=91, events=3000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        asyncio.run(_produce_in_transactions(
            kafka_broker.bootstrap, [(prefix + m.topic, m.key, m.value) for m in messages], size=500))
        wait_until(lambda: kpi_differences(redis_records(client, prefix), expected), timeout=120, interval=2,
                   what="values equal to the oracle")

        def metrics() -> str:
            status, body = worker.get("/metrics")
            assert status == 200
            return body.decode()

        assert counter_total(metrics(), "kpi_stream_offset_gaps_total") > 0, "no marker gap was seen"
        wait_until(lambda: counter_total(metrics(), "kpi_stream_consumer_lag") == 0 or ["lag left"], timeout=60,
                   what="every applied offset committed (lag 0)")
        assert "re-reading from" not in worker.log_tail(100_000), "a marker gap was taken for a skipped range"
    finally:
        worker.stop()
