"""Static group membership (KPI_GROUP_INSTANCE_ID): a worker that stops and is back within the
session timeout keeps its partitions -- the other worker sees no rebalance and rebuilds nothing --
and restarts from its own snapshots. Without instance ids the same stop and start rebalance the
group twice, and the other worker rebuilds partitions from facts: the control that shows the
test tells the two apart."""

from __future__ import annotations

import asyncio
import re

import pytest

from stream import generator
from stream.timeparse import format_rfc3339_us
from tests.e2e.harness import (WorkerProcess, counter_total, produce, redis_records, unique_names, wait_until,
                               worker_env)
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e


def rebuilds(worker: WorkerProcess, source: str | None = None) -> float:
    status, body = worker.get("/metrics")
    assert status == 200, worker.log_tail()
    labels = {"source": source} if source else {}
    return counter_total(body.decode(), "kpi_stream_partition_rebuilds_total", **labels)


@pytest.mark.parametrize("static", [True, False], ids=["instance-ids", "no-instance-ids"])
def test_worker_back_within_the_session_timeout_keeps_its_partitions_without_a_rebalance(
        kafka_broker, redis_server, tmp_path, static):
    import redis

    config = generator.GeneratorConfig(seed=79, events=3_000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    prefix, app_id = unique_names()
    client = redis.Redis.from_url(redis_server.url)
    produced: list = []

    def env(name: str) -> dict[str, str]:
        extra = {"KPI_GROUP_INSTANCE_ID": name} if static else {}
        return worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / f"state-{name}",
                          KPI_CLOCK=as_of, KPI_SESSION_TIMEOUT="45", **extra)

    def produce_and_wait(workers: list[WorkerProcess], new: list) -> None:
        produced.extend(new)
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in new)))
        expected = oracle_kpis([m.value for m in produced], as_of, OracleSettings())

        def redis_values():
            for worker in workers:
                assert worker.alive(), worker.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        wait_until(redis_values, timeout=180, interval=2, what=f"values equal to the oracle over {len(produced)} events")

    first = WorkerProcess(env("w0"), tmp_path / "w0.log").start()
    other = WorkerProcess(env("w1"), tmp_path / "w1.log").start()
    try:
        wait_until(lambda: all(w.get("/ready")[0] == 200 for w in (first, other)), timeout=120, what="both ready")
        produce_and_wait([first, other], messages[:len(messages) // 2])
        # both hold partitions: the stop below must matter to the group
        wait_until(lambda: rebuilds(first) > 0 and rebuilds(other) > 0, timeout=60, what="both own partitions")
        other_rebuilds_before = rebuilds(other)

        first.stop()
        # the same web port: faust's assignor asserts that a kept assignment names this worker's URL
        restarted = WorkerProcess(env("w0"), tmp_path / "w0-again.log", web_port=first.web_port).start()
        produce_and_wait([restarted, other], messages[len(messages) // 2:])
        if static:
            assert rebuilds(other) == other_rebuilds_before, "no rebalance: the other worker rebuilt nothing"
            saved = re.search(r"saved (\d+) engine snapshots", (tmp_path / "w0.log").read_text())
            assert saved and int(saved[1]) > 0, first.log_tail()
            assert rebuilds(restarted, "snapshot") == int(saved[1]), (
                "the restarted worker got its own partitions back and restored them from its snapshots")
        else:
            assert rebuilds(other) > other_rebuilds_before, "without instance ids the group rebalanced"
    finally:
        for worker in (first, other, locals().get("restarted")):
            if worker is not None:
                worker.stop()
