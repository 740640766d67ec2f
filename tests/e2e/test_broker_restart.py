"""The Kafka broker stopped mid-run and started again (same port, same data): the worker waits
without crashing, /ready says Kafka is unreachable (503, "kafka": false) and ready again after,
and every published value equals the oracle once it has caught up -- nothing lost or doubled."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from stream.devtools import generator
from stream.devtools.localstack import KafkaBroker
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import (
    redis_records,
    WorkerProcess, as_records, latest_updates, produce, unique_names, wait_until, worker_env,
)
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e


def _ready_state(worker: WorkerProcess) -> tuple[int, dict]:
    status, body = worker.get("/ready")
    return status, (orjson.loads(body) if body else {})


def test_broker_restart_mid_run_loses_nothing_and_ready_reports_kafka(redis_server, tmp_path):
    import redis

    config = generator.GeneratorConfig(seed=99, events=8000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
    first, second = messages[:4000], messages[4000:]

    broker = KafkaBroker().start(tmp_path / "kafka")  # our own: the session's broker stays up
    prefix, app_id = unique_names()
    env = worker_env(broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        asyncio.run(produce(broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in first)))
        time.sleep(3)

        broker.stop()

        def ready_says_kafka_down():
            status, state = _ready_state(worker)
            return status == 503 and state.get("kafka") is False or [status, state]

        wait_until(ready_says_kafka_down, timeout=60, what="/ready reporting Kafka unreachable")
        time.sleep(10)  # a while without a broker
        assert worker.alive(), worker.log_tail()

        broker.start(tmp_path / "kafka")  # same port and data directory
        asyncio.run(produce(broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in second)))
        client = redis.Redis.from_url(redis_server.url)

        def redis_matches():
            assert worker.alive(), worker.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        wait_until(redis_matches, timeout=240, interval=2, what="Redis equal to the oracle after the broker restart")
        wait_until(lambda: _ready_state(worker)[0] == 200 or [_ready_state(worker)], timeout=60,
                   what="/ready 200 again")
        topic = asyncio.run(latest_updates(broker.bootstrap, prefix + "kpi.updates"))
        assert kpi_differences(as_records(topic), expected) == []
    finally:
        worker.stop()
        broker.stop()
