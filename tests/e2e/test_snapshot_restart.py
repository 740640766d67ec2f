"""A worker that stops saves its engines; the next start restores them, applies only the facts
written since (here by another worker that held the partitions meanwhile), and publishes the
oracle's values over everything produced. After a kill there is no snapshot, and the worker
rebuilds every partition from its facts (stream/snapshots.py)."""

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

PARTITIONS = 4
FAMILIES = 3  # outlet, lead, activity: one engine per family and partition


def consumed(worker: WorkerProcess) -> float:
    status, body = worker.get("/metrics")
    return counter_total(body.decode(), "kpi_stream_events_consumed_total") if status == 200 else 0


def rebuilds(worker: WorkerProcess, source: str) -> float:
    status, body = worker.get("/metrics")
    assert status == 200, worker.log_tail()
    return counter_total(body.decode(), "kpi_stream_partition_rebuilds_total", source=source)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_stopped_worker_restarts_from_its_snapshots_and_publishes_the_oracle_values(
        kafka_broker, redis_server, tmp_path, store):
    import redis

    config = generator.GeneratorConfig(seed=78, events=4_500)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    prefix, app_id = unique_names()
    state = tmp_path / "state"
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, state, KPI_CLOCK=as_of,
                     KPI_SESSION_TIMEOUT="6", KPI_STORE=store, KPI_PARTITIONS=str(PARTITIONS))
    client = redis.Redis.from_url(redis_server.url)
    thirds = [messages[i::3] for i in range(3)]
    produced: list = []

    def produce_while_stopped(new: list) -> None:
        produced.extend(new)
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in new)))

    def wait_for_the_oracle(worker: WorkerProcess) -> None:
        expected = oracle_kpis([m.value for m in produced], as_of, OracleSettings())

        def redis_values():
            assert worker.alive(), worker.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        wait_until(redis_values, timeout=180, interval=2, what=f"values equal to the oracle over {len(produced)} events")

    snapshots = state / "v1" / "engine-snapshots"
    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    worker = WorkerProcess(env, logs[0]).start()
    try:
        produce_while_stopped(thirds[0])
        # stopped while it consumes: its engines often hold facts not yet written to the facts
        # table (how many depends on timing; tests/unit/test_worker_snapshots.py makes it certain)
        wait_until(lambda: consumed(worker) >= len(thirds[0]) // 3, timeout=90, what="a third consumed")
        worker.stop()
        saved = sorted(path.name for path in snapshots.glob("*.snapshot"))
        report = re.search(r"saved (\d+) engine snapshots", logs[0].read_text())
        assert report and int(report[1]) == len(saved) > 0, worker.log_tail()

        # Another pod (its own state directory) holds the partitions meanwhile and writes facts
        # the snapshots do not cover: the first worker must apply them on top.
        worker = WorkerProcess(dict(env, KPI_STATE_DIR=str(tmp_path / "other-state")), logs[1]).start()
        produce_while_stopped(thirds[1])
        wait_for_the_oracle(worker)
        assert rebuilds(worker, "facts") == PARTITIONS * FAMILIES
        worker.stop()

        produce_while_stopped(thirds[2][:len(thirds[2]) // 2])
        worker = WorkerProcess(env, logs[2]).start()
        wait_for_the_oracle(worker)
        assert rebuilds(worker, "snapshot") == len(saved)
        assert rebuilds(worker, "facts") == PARTITIONS * FAMILIES - len(saved)
        assert not list(snapshots.glob("*.snapshot")), "each snapshot is used once"
        worker.kill()  # no snapshot: the next start must rebuild every partition from facts

        produce_while_stopped(thirds[2][len(thirds[2]) // 2:])
        worker = WorkerProcess(env, logs[3]).start()
        wait_for_the_oracle(worker)
        assert rebuilds(worker, "snapshot") == 0
        assert rebuilds(worker, "facts") == PARTITIONS * FAMILIES
    finally:
        worker.stop()
