"""Slow outputs (issue 6): a Redis that stalls every write, and a KPI/changelog producer throttled
by a Kafka quota. The worker's memory stays bounded, the lag and backlog metrics show the
pressure while it lasts, and once the pressure is gone every output equals the oracle."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from stream.devtools import generator
from stream.devtools.localstack import RedisServer
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import (
    WorkerProcess, as_records, latest_updates, metric_total, produce, redis_records, unique_names, wait_until,
    worker_env,
)
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e

FAUST_CLIENT_ID = "faust-0.15.3"  # faust's default broker_client_id: what the quota applies to


def _rss_mib(worker: WorkerProcess) -> float:
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _scenario(seed: int, events: int):
    config = generator.GeneratorConfig(seed=seed, events=events)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    return messages, as_of, oracle_kpis([m.value for m in messages], as_of, OracleSettings())


def test_a_stalled_redis_holds_back_neither_consumption_nor_kpi_updates_and_its_backlog_stays_one_per_key(
        kafka_broker, tmp_path):
    import redis

    messages, as_of, expected = _scenario(seed=61, events=6000)
    own_redis = RedisServer().start(tmp_path / "redis")
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, own_redis.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    client = redis.Redis.from_url(own_redis.url)
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in messages[:1000])))
        wait_until(lambda: client.hlen(f"{prefix}kpi:latest") > 0 or ["empty"], timeout=60, what="first values")

        client.execute_command("CLIENT", "PAUSE", "25000", "WRITE")  # every write now waits 25 s
        paused_at = time.monotonic()
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in messages[1000:])))

        def topic_matches():
            topic = asyncio.run(latest_updates(kafka_broker.bootstrap, prefix + "kpi.updates"))
            return kpi_differences(as_records(topic), expected)

        wait_until(topic_matches, timeout=20, interval=1, what="kpi.updates complete while Redis stalls")
        assert time.monotonic() - paused_at < 25, "the topic only caught up after the pause ended"
        backlog = metric_total(worker, "kpi_stream_redis_backlog")
        assert 0 < backlog <= len(expected), f"Redis backlog {backlog} for {len(expected)} keys"
        assert _rss_mib(worker) < 400

        client.execute_command("CLIENT", "UNPAUSE")
        wait_until(lambda: kpi_differences(redis_records(client, prefix), expected), timeout=60,
                   what="Redis caught up after the stall")
        wait_until(lambda: metric_total(worker, "kpi_stream_redis_backlog") == 0 or ["backlog left"], timeout=20,
                   what="Redis backlog drained")
    finally:
        worker.stop()
        own_redis.stop()


def test_a_throttled_producer_slows_consumption_with_lag_showing_and_bounded_memory_then_catches_up(
        kafka_broker, redis_server, tmp_path):
    import redis

    messages, as_of, expected = _scenario(seed=62, events=8000)
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        rss_before = _rss_mib(worker)
        holes_before = metric_total(worker, "kpi_stream_offset_holes_total")
        # 16 KiB/s for changelogs, partials and updates: well below what the worker writes (calendar
        # periods and targets made its partials and updates ~4x those of the rolling windows alone)
        kafka_broker.set_producer_quota(FAUST_CLIENT_ID, 16384)
        try:
            asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in messages)))
            wait_until(lambda: metric_total(worker, "kpi_stream_consumer_lag") > 0 or ["no lag"], timeout=30,
                       what="lag showing the throttled worker")
            time.sleep(10)
            assert worker.alive(), worker.log_tail()
            consumed = metric_total(worker, "kpi_stream_events_consumed_total")
            assert consumed < len(messages), "consumption was not held back by the slow producer"
            assert metric_total(worker, "kpi_stream_consumer_lag") > 0
            assert _rss_mib(worker) - rss_before < 150
        finally:
            kafka_broker.set_producer_quota(FAUST_CLIENT_ID, None)
        client = redis.Redis.from_url(redis_server.url)
        wait_until(lambda: kpi_differences(redis_records(client, prefix), expected), timeout=180, interval=2,
                   what="values equal to the oracle after the throttle is lifted")
        wait_until(lambda: metric_total(worker, "kpi_stream_consumer_lag") == 0 or ["lag left"], timeout=30,
                   what="lag back to zero")
        # Held back on purpose, the partitions were not stalled: re-reading them (a seek that drops
        # what was fetched, every lag round) only slowed the catch-up down.
        assert metric_total(worker, "kpi_stream_offset_holes_total") == holes_before, worker.log_tail(20)
    finally:
        worker.stop()
