"""Rebalances while traffic flows: two workers, one killed (-9) and later restarted, a third
joining mid-run. After catch-up every output equals the oracle -- Redis, the compacted topic,
and the gauges, where each scope is exported by exactly one live worker (the one owning it)."""

from __future__ import annotations

import asyncio
import time

import pytest

from stream.core.calendar import is_designator
from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import (
    redis_records,
    WorkerProcess, as_records, gauge_values, latest_updates, metric_total, produce, unique_names, wait_until,
    worker_env,
)
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e

EXPORTED_SCOPES = {"global", "region", "territory"}


def _gauges_of_live_workers(workers: list[WorkerProcess]) -> tuple[dict[str, dict], list[str]]:
    """Union of every live worker's KPI gauges, and keys two workers export with different values."""
    union: dict[str, dict] = {}
    conflicts: list[str] = []
    for worker in workers:
        status, text = worker.get("/metrics")
        assert status == 200, worker.log_tail()
        for key, record in gauge_values(text.decode()).items():
            if key in union and union[key] != record:
                conflicts.append(f"{key}: {union[key]} vs {record} ({worker.log_path.name})")
            union[key] = record
    return union, conflicts


def test_kill_restart_and_a_third_worker_joining_mid_run_publish_the_oracle_values(kafka_broker, redis_server, tmp_path):
    import redis

    config = generator.GeneratorConfig(seed=777, events=16_000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state",
                     KPI_CLOCK=as_of, KPI_SESSION_TIMEOUT="6", KPI_PARTITIONS="6")
    chunks = [messages[i::4] for i in range(4)]

    def send(chunk) -> None:
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in chunk)))

    first = WorkerProcess(env, tmp_path / "worker-a.log").start()
    second = WorkerProcess(env, tmp_path / "worker-b.log").start()
    workers = [first, second]
    client = redis.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: all(w.get("/ready")[0] == 200 for w in workers) or [w.log_tail(3) for w in workers],
                   timeout=120, what="two workers ready")
        send(chunks[0])
        time.sleep(2)
        second.kill()  # its partitions move to the first after the session timeout
        send(chunks[1])
        third = WorkerProcess(env, tmp_path / "worker-c.log").start()  # joins mid-run
        workers = [first, third]
        send(chunks[2])
        time.sleep(3)
        second = WorkerProcess(env, tmp_path / "worker-b-restarted.log").start()
        workers = [first, third, second]
        send(chunks[3])

        def redis_matches():
            for worker in workers:
                assert worker.alive(), worker.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        try:
            wait_until(redis_matches, timeout=240, interval=2, what="Redis equal to the oracle after the rebalances")
        except AssertionError:
            problems = kpi_differences(redis_records(client, prefix), expected,
                                       limit=100_000)
            (tmp_path / "differences.txt").write_text("\n".join(problems))
            raise
        wait_until(lambda: all(w.get("/ready")[0] == 200 for w in workers) or [w.log_tail(3) for w in workers],
                   timeout=120, what="all three workers ready (no rebalance running)")
        time.sleep(2)

        topic = asyncio.run(latest_updates(kafka_broker.bootstrap, prefix + "kpi.updates"))
        assert kpi_differences(as_records(topic), expected) == []
        expected_gauges = {key: {"value": record["value"]} for key, record in expected.items()
                           if key.split("|")[2] in EXPORTED_SCOPES and record["value"] is not None
                           and not is_designator(key.split("|")[1])}  # gauges: aliases, never designators

        def gauges_match():
            union, conflicts = _gauges_of_live_workers(workers)
            return conflicts + kpi_differences(union, expected_gauges)

        wait_until(gauges_match, timeout=60, interval=2, what="gauges of the live workers equal to the oracle")
        # the first worker stayed through every rebalance: the partitions it kept resumed with
        # the engines it held (stream/worker/app.py `parked`), which the values above include
        assert metric_total(first, "kpi_stream_partition_rebuilds_total", source="kept") > 0
    finally:
        for worker in (first, second, *workers):
            worker.stop()
