"""Static group membership (KPI_GROUP_INSTANCE_ID): a worker that stops and is back within the
session timeout keeps its partitions -- the other worker sees no rebalance and rebuilds nothing --
and restarts from its own snapshots. Without instance ids the same stop and start rebalance the
group twice, and the other worker rebuilds partitions from facts: the control that shows the
test tells the two apart."""

from __future__ import annotations

import re

import pytest

from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import OracleCheck, WorkerProcess, metric_total, unique_names, wait_until, worker_env

pytestmark = pytest.mark.e2e


def rebuilds(worker: WorkerProcess, source: str | None = None) -> float:
    labels = {"source": source} if source else {}
    return metric_total(worker, "kpi_stream_partition_rebuilds_total", **labels)


@pytest.mark.parametrize("static", [True, False], ids=["instance-ids", "no-instance-ids"])
def test_worker_back_within_the_session_timeout_keeps_its_partitions_without_a_rebalance(
        kafka_broker, redis_server, tmp_path, static):
    import redis

    config = generator.GeneratorConfig(seed=79, events=3_000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    prefix, app_id = unique_names()
    check = OracleCheck(kafka_broker.bootstrap, redis.Redis.from_url(redis_server.url), prefix, as_of)

    def env(name: str) -> dict[str, str]:
        extra = {"KPI_GROUP_INSTANCE_ID": name} if static else {}
        return worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / f"state-{name}",
                          KPI_CLOCK=as_of, KPI_SESSION_TIMEOUT="45", **extra)

    first = WorkerProcess(env("w0"), tmp_path / "w0.log").start()
    other = WorkerProcess(env("w1"), tmp_path / "w1.log").start()
    try:
        wait_until(lambda: all(w.get("/ready")[0] == 200 for w in (first, other)), timeout=120, what="both ready")
        check.produce(messages[:len(messages) // 2])
        check.wait_for_redis(first, other)
        # both hold partitions: the stop below must matter to the group
        wait_until(lambda: rebuilds(first) > 0 and rebuilds(other) > 0, timeout=60, what="both own partitions")
        other_rebuilds_before = rebuilds(other)

        first.stop()
        # the same web port: faust's assignor asserts that a kept assignment names this worker's URL
        restarted = WorkerProcess(env("w0"), tmp_path / "w0-again.log", web_port=first.web_port).start()
        check.produce(messages[len(messages) // 2:])
        check.wait_for_redis(restarted, other)
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
