"""End to end: real broker, real Redis, real worker processes, generator traffic with late,
duplicate and malformed events; every output compared with the oracle at the pinned clock."""

from __future__ import annotations

import asyncio
import hashlib
import time

import orjson
import pytest

from stream.core.calendar import is_designator
from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us
from stream.worker.metrics import LATENCY_BUCKETS
from tests.e2e.harness import (
    WorkerProcess, as_records, counter_total, gauge_values, kpi_all, kpi_update_schema, latest_updates, metric_total,
    produce, unique_names, wait_until, worker_env,
)
from tests.kpi_compare import kpi_differences, values_by_key
from tests.oracle import OracleSettings, accepted_events, oracle_kpis

pytestmark = pytest.mark.e2e

EVENTS = 20_000


@pytest.fixture(scope="module")
def traffic():
    config = generator.GeneratorConfig(seed=20261124, events=EVENTS)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
    return messages, as_of, expected


def _redis_values(redis_client, prefix: str) -> dict[str, dict]:
    raw = redis_client.hgetall(f"{prefix}kpi:latest")
    return as_records({k.decode(): orjson.loads(v) for k, v in raw.items()})


def _run_and_check(kafka_broker, redis_server, tmp_path, traffic, workers: int) -> None:
    import redis

    messages, as_of, expected = traffic
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state",
                     KPI_CLOCK=as_of, KPI_SESSION_TIMEOUT="10")
    procs = [WorkerProcess(env, tmp_path / f"worker{i}.log").start() for i in range(workers)]
    try:
        produced_at = time.time()
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + m.topic, m.key, m.value) for m in messages)))
        client = redis.Redis.from_url(redis_server.url)

        def redis_matches():
            for proc in procs:
                assert proc.alive(), proc.log_tail()
            return kpi_differences(_redis_values(client, prefix), expected)

        try:
            wait_until(redis_matches, timeout=240, interval=2, what="Redis values to equal the oracle")
        except AssertionError:
            problems = kpi_differences(_redis_values(client, prefix), expected, limit=100_000)
            (tmp_path / "differences.txt").write_text("\n".join(problems))
            raise
        # Settled: no publication round changes anything any more; compare every output.
        time.sleep(2)
        assert kpi_differences(_redis_values(client, prefix), expected) == []

        every: list[dict] = []
        topic = asyncio.run(latest_updates(kafka_broker.bootstrap, prefix + "kpi.updates", every))
        assert kpi_differences(as_records(topic), expected) == []
        schema = kpi_update_schema()
        for message in every:  # what a strictly validating consumer reads (schemas/README.md)
            schema.validate(message)
        for key, latest in topic.items():  # spec 5.1: CloudEvents binary-mode headers on every message
            assert latest["_headers"] == {
                "ce_specversion": "1.0",
                "ce_id": hashlib.sha256(f"{key}@{latest['as_of']}".encode()).hexdigest()[:32],
                "ce_source": f"/kpi-stream/{app_id}",
                "ce_type": "kpi.updated.v1",
                "ce_time": latest["computed_at"],
                "content-type": "application/json",
            }, key
            assert latest["as_of"] == as_of.replace("+00:00", "Z")
        # every kind of window the worker publishes reached the topic (and passed the schema above)
        assert {"7d", "today", "mtd", "lmtd", None} <= {latest["window"] for latest in topic.values()}

        assert kpi_differences(values_by_key(kpi_all(procs[0])), expected) == []

        # spec 8: gauges carry rolling windows and the aliases, never a designated period
        exported = {"global", "region", "territory"}
        expected_gauges = {
            key: {"value": record["value"]} for key, record in expected.items()
            if key.split("|")[2] in exported and record["value"] is not None and not is_designator(key.split("|")[1])
        }
        gauges: dict[str, dict] = {}
        for proc in procs:  # each worker exports the scopes whose partitions it owns
            status, text = proc.get("/metrics")
            assert status == 200
            gauges.update(gauge_values(text.decode()))
        assert kpi_differences(gauges, expected_gauges) == []
        assert {key.split("|")[1] for key in gauges} >= {"7d", "30d", "60d", "today", "wtd", "mtd", "qtd", "lmtd"}
        if workers == 1:
            # With two, a rebalance can drop a revoked partition's unflushed events from the
            # metric or count re-read ones again; the values above are what must be exact there.
            _check_every_applied_event_observed_once(procs[0], messages, as_of, time.time() - produced_at)
        for proc in procs:  # KPI_EVENT_LOOP's default, as the worker process itself reports it
            assert "clock=pinned loop=uvloop" in proc.log_path.read_text(errors="replace"), proc.log_tail()
    finally:
        for proc in procs:
            proc.stop()


def _check_every_applied_event_observed_once(proc: WorkerProcess, messages, as_of: str, elapsed_s: float) -> None:
    """kpi_stream_publish_latency_seconds observes each event the oracle accepts exactly once
    (stream/stages/waiting.py), each no later than the test has been running since it produced them."""
    applied = len(accepted_events([m.value for m in messages], parse_rfc3339_us(as_of), OracleSettings()))
    name = "kpi_stream_publish_latency_seconds"
    def observed() -> list[str]:
        count = metric_total(proc, f"{name}_count")
        return [] if count == applied else [f"{count:.0f} observed"]

    wait_until(observed, timeout=10, interval=0.5, what=f"{applied} applied events in {name}")
    text = proc.get("/metrics")[1].decode()
    within = next((bound for bound in LATENCY_BUCKETS if bound >= elapsed_s + 1), None)
    if within is not None:  # a run slower than the largest bound leaves only the sum's bound below
        assert counter_total(text, f"{name}_bucket", le=str(within)) == applied
    assert 0 < counter_total(text, f"{name}_sum") <= applied * elapsed_s


def test_one_worker_publishes_the_oracle_values_in_every_output(kafka_broker, redis_server, tmp_path, traffic):
    _run_and_check(kafka_broker, redis_server, tmp_path, traffic, workers=1)


def test_two_workers_in_one_group_publish_the_same_values(kafka_broker, redis_server, tmp_path, traffic):
    _run_and_check(kafka_broker, redis_server, tmp_path, traffic, workers=2)


def test_time_passing_alone_republishes_values_that_left_the_window(kafka_broker, redis_server, tmp_path):
    """Wall clock, 1 s slots, a 6 s window (room for a busy machine): one order, then no events."""
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state",
                     KPI_SLOT_SECONDS="1", KPI_WINDOWS="6s", KPI_CONVERSION_HORIZONS="1s", KPI_DORMANCY="2s")
    proc = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: proc.get("/ready")[0] == 200 or [proc.log_tail(5)], timeout=90, what="worker ready")
        order = {"event_id": "only", "type": "order.placed", "occurred_at": format_rfc3339_us(time.time_ns() // 1000),
                 "outlet_id": "o1", "order_id": "x", "amount": "1.00", "currency": "USD", "lines": 1}
        asyncio.run(produce(kafka_broker.bootstrap, [(prefix + "sales.orders", b"o1", orjson.dumps(order))]))
        key = "active_accounts|6s|global|all"

        def history() -> list[int]:
            from stream.devtools.tail import read_topic

            rows = asyncio.run(read_topic(kafka_broker.bootstrap, prefix + "kpi.updates", timeout_s=1.0, follow=False))
            return [row["value"]["value"] for row in rows if row["key"] == key]

        # One order, then nothing: the value must go up to 1 and come back to 0 by expiry alone.
        wait_until(lambda: history()[-1:] == [0] and 1 in history() or [str(history())],
                   timeout=60, interval=1, what="active_accounts 1 then 0 without new events")
        values = history()
        assert values.index(1) < len(values) - 1 and values[-1] == 0
        dormant = [row for row in asyncio.run(latest_updates(kafka_broker.bootstrap, prefix + "kpi.updates")).items()
                   if row[0] == "dormant_accounts|6s|global|all"]
        assert dormant and dormant[0][1]["value"] == 1
    finally:
        proc.stop()


def test_more_open_leads_than_a_64_bit_sum_of_their_creation_instants_are_published_exactly(
        kafka_broker, redis_server, tmp_path):
    """A lead scope sums its open leads' creation instants in microseconds (~1.8e15 each): past
    ~10,300 open leads of one scope in one partition that is beyond 64 bits. The partials' JSON once
    could not carry it: the worker crashed at its next partials flush, and again after every restart.
    One partition, so that 10,400 leads are enough (with four, each partition's sum is a quarter)."""
    import redis

    as_of = "2026-11-24T00:00:00Z"
    as_of_us = parse_rfc3339_us(as_of)
    messages = []
    for n in range(10_400):
        created = format_rfc3339_us(as_of_us - (n % 5000 + 1) * 60_000_000)
        doc = {"event_id": f"big-{n}", "type": "lead.created", "occurred_at": created, "lead_id": f"L{n}",
               "rep_id": f"rep-{n % 7}", "value": 100 + n}
        messages.append((f"L{n}".encode(), orjson.dumps(doc)))
    expected = oracle_kpis([value for _key, value in messages], as_of, OracleSettings())
    assert expected["open_leads|-|global|all"]["value"] == 10_400
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of,
                     KPI_PARTITIONS="1")
    proc = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: proc.get("/ready")[0] == 200 or [proc.log_tail(5)], timeout=90, what="worker ready")
        asyncio.run(produce(kafka_broker.bootstrap, ((prefix + "sales.leads", key, value) for key, value in messages)))
        client = redis.Redis.from_url(redis_server.url)

        def redis_matches():
            assert proc.alive(), proc.log_tail()
            return kpi_differences(_redis_values(client, prefix), expected)

        wait_until(redis_matches, timeout=180, interval=2, what="Redis values to equal the oracle")
        assert "exceeds 64-bit" not in proc.log_tail(100_000)
    finally:
        proc.stop()
