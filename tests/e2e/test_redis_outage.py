"""Redis stopped for a while, then back: the worker keeps consuming and publishing to the topic,
/ready reports Redis down without going unready, and Redis catches up to the latest values."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from stream.devtools import generator
from stream.devtools.localstack import RedisServer
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import (
    redis_records,
    WorkerProcess, as_records, latest_updates, produce, unique_names, wait_until, worker_env,
)
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e


def test_redis_outage_loses_nothing_and_redis_catches_up(kafka_broker, tmp_path):
    import redis

    config = generator.GeneratorConfig(seed=31, events=6000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
    first, second = messages[:3000], messages[3000:]

    own_redis = RedisServer().start(tmp_path / "redis")
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, own_redis.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in first)))
        client = redis.Redis.from_url(own_redis.url)
        wait_until(lambda: client.hlen(f"{prefix}kpi:latest") > 0 or ["empty"], timeout=60, what="first values in Redis")

        own_redis.stop()
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in second)))

        def ready_says_redis_down():
            status, body = worker.get("/ready")
            state = orjson.loads(body) if body else {}
            return status == 200 and state.get("redis") is False or [status, state]

        wait_until(ready_says_redis_down, timeout=30, what="/ready reporting Redis down while staying ready")

        def topic_matches():
            topic = asyncio.run(latest_updates(kafka_broker.bootstrap, prefix + "kpi.updates"))
            return kpi_differences(as_records(topic), expected)

        wait_until(topic_matches, timeout=120, interval=2, what="kpi.updates complete while Redis is down")
        assert worker.alive()

        time.sleep(2)
        own_redis.start(tmp_path / "redis")  # same port, empty: everything must be rewritten

        def redis_matches():
            return kpi_differences(redis_records(client, prefix), expected)

        wait_until(redis_matches, timeout=60, interval=1, what="Redis caught up after the outage")
    finally:
        worker.stop()
        own_redis.stop()
