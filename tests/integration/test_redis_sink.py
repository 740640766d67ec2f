"""The Redis sink (stream/worker/sinks.py) against a real Redis whose writes are paused: the
backlog gauge counts each waiting key once, also a key that is both in the stalled write and
queued again behind it, so it never exceeds the number of keys."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis_asyncio
from prometheus_client import CollectorRegistry

from stream.worker.metrics import build_processor_metrics
from stream.worker.sinks import RedisSink

pytestmark = pytest.mark.integration


def test_a_key_in_the_stalled_write_and_queued_again_counts_once_in_the_backlog(redis_server):
    async def scenario() -> list[float]:
        registry = CollectorRegistry()
        metrics = build_processor_metrics(registry)
        client = redis_asyncio.from_url(redis_server.url)
        admin = redis_asyncio.from_url(redis_server.url)
        sink = RedisSink(client, "sink-test:", metrics, snapshot=dict)
        sink.needs_full_write = False
        first = {f"k{n}": b'{"v":1}' for n in range(300)}
        again = {f"k{n}": b'{"v":2}' for n in range(200, 400)}  # 100 of them new
        seen = []
        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        try:
            writing = asyncio.ensure_future(sink.write(first))
            await asyncio.sleep(0.3)  # the write of `first` is under way, held by the pause
            sink.offer(again)
            seen.append(registry.get_sample_value("kpi_stream_redis_backlog"))
            await writing
            seen.append(registry.get_sample_value("kpi_stream_redis_backlog"))
            await sink.write()
            seen.append(registry.get_sample_value("kpi_stream_redis_backlog"))
            stored = await admin.hgetall("sink-test:kpi:latest")
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.delete("sink-test:kpi:latest")
            await client.aclose()
            await admin.aclose()
        assert len(stored) == 400 and stored[b"k250"] == b'{"v":2}' and stored[b"k0"] == b'{"v":1}'
        return seen

    assert asyncio.run(scenario()) == [400, 200, 0]
