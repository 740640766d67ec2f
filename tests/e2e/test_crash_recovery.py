"""kill -9 a worker while it processes, restart it, and after catch-up every published value
equals the oracle: nothing lost, nothing double counted (spec section 4, exactly-once values).

Why it holds by design: accepted events are stored in a changelog table under (entity,
event_id, reference instant) -- a re-read after a crash overwrites the same key and is caught
by dedupe on rebuild -- and offsets are committed only after those writes are flushed, so an
event is either in the rebuilt state or re-read. Stage 2 holds absolute partials, so resends
are harmless. With background snapshots every second, restarts also restore engines saved at
random moments (stream/worker/snapshots.py). Short form in CI (KPI_CRASH_KILLS, default 3); set it to
50 for the long mode.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import (OracleCheck, WorkerProcess, metric_total, produce, redis_records, unique_names,
                               wait_until, worker_env)
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e

KILLS = int(os.environ.get("KPI_CRASH_KILLS", "3"))


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_worker_killed_at_random_moments_and_restarted_publishes_the_oracle_values(kafka_broker, redis_server, tmp_path,
                                                                                    store):
    import redis

    config = generator.GeneratorConfig(seed=4242, events=15_000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
    prefix, app_id = unique_names()
    # background snapshots every second: kills land mid-save too, and restarts restore from them
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state",
                     KPI_CLOCK=as_of, KPI_SESSION_TIMEOUT="6", KPI_STORE=store, KPI_SNAPSHOT_INTERVAL="1",
                     # outlets packed at rest as soon as two others were touched: through kills,
                     # background snapshots and rebuilds (stream/core/outlet_packing.py)
                     KPI_HOT_OUTLETS="0")
    rng = random.Random(7)
    client = redis.Redis.from_url(redis_server.url)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        # Produce in chunks between kills so kills land mid-stream, mid-publish and mid-recovery.
        chunks = [messages[i::KILLS + 1] for i in range(KILLS + 1)]
        for kill in range(KILLS):
            asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in chunks[kill])))
            time.sleep(rng.uniform(0.2, 3.0))
            worker.kill()
            worker = WorkerProcess(env, tmp_path / f"worker-after-kill-{kill}.log").start()
            if rng.random() < 0.5:  # sometimes kill again during state recovery
                time.sleep(rng.uniform(1.0, 4.0))
                worker.kill()
                worker = WorkerProcess(env, tmp_path / f"worker-after-recovery-kill-{kill}.log").start()
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in chunks[-1])))

        def redis_values():
            assert worker.alive(), worker.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        wait_until(redis_values, timeout=300, interval=2, what=f"values equal to the oracle after {KILLS} kills")
    finally:
        worker.stop()


def test_on_disk_tables_are_kept_after_a_kill_with_batches_unacknowledged_and_the_changelog_holds_every_fact(
        kafka_broker, redis_server, tmp_path):
    """stream/kafka/local_tables.py: facts enter the local store only once Kafka has them, so an on-disk
    store is kept after a kill -- here a kill while the broker is frozen and a flush of facts is
    on its way -- and the changelog still holds every fact: a worker with a new volume, rebuilt
    from the changelog alone, publishes the oracle's values too."""
    import redis

    config = generator.GeneratorConfig(seed=77, events=4_000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    prefix, app_id = unique_names()
    state = tmp_path / "state"
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, state,
                     KPI_CLOCK=as_of, KPI_SESSION_TIMEOUT="6", KPI_STORE="rocksdb://")
    redis_client = redis.Redis.from_url(redis_server.url)
    check = OracleCheck(kafka_broker.bootstrap, redis_client, prefix, as_of)
    first, chunks, last = messages[:1_500], [messages[n:n + 250] for n in range(1_500, 2_500, 250)], messages[2_500:]

    logs = [tmp_path / f"worker-{n}.log" for n in range(3)]
    worker = WorkerProcess(env, logs[0]).start()
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        check.produce(first)
        check.wait_for_redis(worker)
        # Freeze the broker right after the worker consumed a chunk: the facts it applied are
        # then waiting for the next flush or on their way, and Kafka cannot acknowledge them.
        for chunk in chunks:
            before = metric_total(worker, "kpi_stream_events_consumed_total")
            check.produce(chunk)
            # freeze as soon as the chunk is being consumed: the counter is published in steps, so
            # waiting for all of it leaves time for its facts to be acknowledged already
            wait_until(lambda: metric_total(worker, "kpi_stream_events_consumed_total") > before,
                       timeout=60, interval=0.01, what="chunk being consumed")
            os.killpg(kafka_broker.pid, signal.SIGSTOP)
            try:
                time.sleep(1.0)  # a flush or two: the batches are sent, and stay unacknowledged
                unacknowledged = metric_total(worker, "kpi_stream_facts_unacknowledged")
                if unacknowledged > 0:
                    worker.kill()
                    break
            finally:
                os.killpg(kafka_broker.pid, signal.SIGCONT)
        else:
            pytest.fail("every chunk's facts were acknowledged before the broker froze: no kill with "
                        "facts on their way was made")

        worker = WorkerProcess(env, logs[1]).start()
        check.produce(last)
        check.wait_for_redis(worker)
        assert "local table state kept" in logs[1].read_text()
        worker.stop()

        # a new volume: every table from the changelog; the values must still be the oracle's
        redis_client.delete(f"{prefix}kpi:latest")
        worker = WorkerProcess(dict(env, KPI_STATE_DIR=str(tmp_path / "new-volume")), logs[2]).start()
        check.wait_for_redis(worker)
    finally:
        worker.stop()
