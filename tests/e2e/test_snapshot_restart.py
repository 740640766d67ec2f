"""A worker that stops saves its engines; the next start restores them, applies only the facts
written since (here by another worker that held the partitions meanwhile), and publishes the
oracle's values over everything produced. Without background snapshots a kill leaves none, and
the worker rebuilds every partition from its facts; with them, it restores the last ones
(stream/worker/snapshots.py)."""

from __future__ import annotations

import re

import pytest

from stream.core.engine import Family
from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import OracleCheck, WorkerProcess, metric_total, unique_names, wait_until, worker_env

pytestmark = pytest.mark.e2e

PARTITIONS = 4
FAMILIES = len(Family)  # outlet, lead, activity, target: one engine per family and partition


def rebuilds(worker: WorkerProcess, source: str) -> float:
    return metric_total(worker, "kpi_stream_partition_rebuilds_total", source=source)


def one_app(kafka_broker, redis_server, tmp_path, seed: int, store: str, **extra: str):
    """4,500 generated events, the env of one app (state under tmp_path/state) and its oracle check."""
    import redis

    config = generator.GeneratorConfig(seed=seed, events=4_500)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of,
                     KPI_SESSION_TIMEOUT="6", KPI_STORE=store, KPI_PARTITIONS=str(PARTITIONS), **extra)
    return messages, env, OracleCheck(kafka_broker.bootstrap, redis.Redis.from_url(redis_server.url), prefix, as_of)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_stopped_worker_restarts_from_its_snapshots_and_publishes_the_oracle_values(
        kafka_broker, redis_server, tmp_path, store):
    # snapshots at stops only: the kill below must find none (background ones: the test after this)
    messages, env, check = one_app(kafka_broker, redis_server, tmp_path, 78, store, KPI_SNAPSHOT_INTERVAL="0")
    state = tmp_path / "state"
    thirds = [messages[i::3] for i in range(3)]

    snapshots = state / "v1" / "engine-snapshots"
    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    worker = WorkerProcess(env, logs[0]).start()
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        check.produce(thirds[0])
        # stopped while it consumes: its engines often hold facts not yet written to the facts
        # table (how many depends on timing; tests/unit/worker/test_app_snapshots.py makes it certain)
        wait_until(lambda: metric_total(worker, "kpi_stream_events_consumed_total") >= len(thirds[0]) // 3,
                   timeout=90, what="a third consumed")
        worker.stop()
        saved = sorted(path.name for path in snapshots.glob("*.snapshot"))
        report = re.search(r"saved (\d+) engine snapshots", logs[0].read_text())
        assert report and int(report[1]) == len(saved) > 0, worker.log_tail()

        # Another pod (its own state directory) holds the partitions meanwhile and writes facts
        # the snapshots do not cover: the first worker must apply them on top.
        worker = WorkerProcess(dict(env, KPI_STATE_DIR=str(tmp_path / "other-state")), logs[1]).start()
        check.produce(thirds[1])
        check.wait_for_redis(worker)
        assert rebuilds(worker, "facts") == PARTITIONS * FAMILIES
        worker.stop()

        check.produce(thirds[2][:len(thirds[2]) // 2])
        worker = WorkerProcess(env, logs[2]).start()
        check.wait_for_redis(worker)
        assert rebuilds(worker, "snapshot") == len(saved)
        assert rebuilds(worker, "facts") == PARTITIONS * FAMILIES - len(saved)
        assert not list(snapshots.glob("*.snapshot")), "each snapshot is used once"
        worker.kill()  # no snapshot: the next start must rebuild every partition from facts

        check.produce(thirds[2][len(thirds[2]) // 2:])
        worker = WorkerProcess(env, logs[3]).start()
        check.wait_for_redis(worker)
        assert rebuilds(worker, "snapshot") == 0
        assert rebuilds(worker, "facts") == PARTITIONS * FAMILIES
    finally:
        worker.stop()


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_killed_worker_restarts_from_its_background_snapshots_and_publishes_the_oracle_values(
        kafka_broker, redis_server, tmp_path, store):
    messages, env, check = one_app(kafka_broker, redis_server, tmp_path, 79, store, KPI_SNAPSHOT_INTERVAL="2")
    state = tmp_path / "state"
    half, quarter = len(messages) // 2, 3 * len(messages) // 4

    def saved(worker: WorkerProcess) -> float:
        return metric_total(worker, "kpi_stream_background_snapshots_total", outcome="saved")

    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    worker = WorkerProcess(env, logs[0]).start()
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        check.produce(messages[:half])
        check.wait_for_redis(worker)
        before = saved(worker)
        wait_until(lambda: saved(worker) > before, timeout=60, interval=0.5, what="a background snapshot")
        check.produce(messages[half:quarter])  # after the snapshot: applied from facts at the restart
        wait_until(lambda: metric_total(worker, "kpi_stream_events_consumed_total") >= quarter,
                   timeout=90, what="the third quarter consumed")
        worker.kill()
        assert len(list((state / "v1" / "engine-snapshots").glob("*.snapshot"))) == PARTITIONS * FAMILIES

        check.produce(messages[quarter:])
        worker = WorkerProcess(env, logs[1]).start()
        check.wait_for_redis(worker)
        assert rebuilds(worker, "snapshot") == PARTITIONS * FAMILIES
        assert rebuilds(worker, "facts") == 0
        if store == "rocksdb://":
            assert "local table state kept" in logs[1].read_text()
    finally:
        worker.stop()
