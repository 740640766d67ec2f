"""A backfill end to end: `kpi-stream send` of a generated file (late, duplicate and malformed
events included) into a running worker gives the oracle's values, and every line the worker
rejects reaches kpi.deadletter with the decoder's reason -- the unroutable ones from sales.events."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections import Counter

import orjson
import pytest

from stream.core.config import KpiSettings
from stream.core.decode import Rejected, decode_event
from stream.core.routing import UNROUTED, route
from stream.core.timeparse import format_rfc3339_us
from stream.devtools import generator
from tests.e2e.harness import REPO, WorkerProcess, redis_records, unique_names, wait_until, worker_env
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e


def test_a_sent_file_gives_the_oracle_values_and_its_bad_lines_are_dead_lettered(kafka_broker, redis_server, tmp_path):
    import redis

    from stream.devtools.tail import read_topic

    config = generator.GeneratorConfig(seed=38, events=3000, outlets=300, malformed_fraction=0.02)
    as_of_us = generator.now_us(config)
    as_of = format_rfc3339_us(as_of_us)
    no_key = orjson.dumps({"event_id": "nk", "type": "order.placed", "occurred_at": as_of, "order_id": "x",
                           "amount": "1", "currency": "USD", "lines": 1})
    lines = [message.value for message in generator.generate(config)] + [no_key]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    expected = oracle_kpis(lines, as_of, OracleSettings())
    rejected = []
    for raw in lines:
        try:
            decode_event(raw, as_of_us, KpiSettings())
        except Rejected as error:
            rejected.append((error.reason, raw))
    assert any(route(raw) == UNROUTED for _, raw in rejected)

    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of)
    proc = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: proc.get("/ready")[0] == 200 or [proc.log_tail(5)], timeout=90, what="worker ready")
        send_env = {key: value for key, value in os.environ.items() if not key.startswith(("KPI_", "KAFKA_"))}
        sent = subprocess.run([sys.executable, "-m", "stream", "send", str(events), "--kafka", kafka_broker.bootstrap],
                              env={**send_env, "KPI_TOPIC_PREFIX": prefix}, cwd=REPO, capture_output=True, timeout=60)
        assert sent.returncode == 0, sent.stderr.decode()
        assert f"{len(lines):,} lines read, {len(lines):,} sent" in sent.stderr.decode()

        client = redis.Redis.from_url(redis_server.url)

        def redis_matches():
            assert proc.alive(), proc.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        wait_until(redis_matches, timeout=60, interval=1, what="Redis values to equal the oracle")

        def dead_letters() -> list[dict]:
            rows = asyncio.run(read_topic(kafka_broker.bootstrap, prefix + "kpi.deadletter", timeout_s=1.0, follow=False))
            return [row["value"] for row in rows]

        wait_until(lambda: len(dead_letters()) >= len(rejected) or [f"{len(dead_letters())} of {len(rejected)}"],
                   timeout=30, what="every rejected line dead-lettered")
        time.sleep(1)
        records = dead_letters()
        got = Counter((record["reason"], _original(record), record["source"]["topic"]) for record in records)
        want = Counter((reason, raw, prefix + route(raw).topic) for reason, raw in rejected)
        assert got == want
    finally:
        proc.stop()


def _original(record: dict) -> bytes:
    if record["value_encoding"] == "base64":
        return base64.b64decode(record["value_base64"])
    return record["value"].encode()
