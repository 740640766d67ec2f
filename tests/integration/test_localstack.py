"""The local stack is real: a produce/consume round trip through the broker, SET/GET in Redis,
and stop() really ends the processes."""

from __future__ import annotations

import asyncio
import os

import pytest

from stream.devtools.localstack import RedisServer

pytestmark = pytest.mark.integration


def test_broker_round_trips_a_message_through_a_consumer_group(kafka_broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def round_trip() -> bytes:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("roundtrip", num_partitions=2, replication_factor=1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        await producer.send_and_wait("roundtrip", key=b"k", value=b"hello")
        await producer.stop()
        consumer = AIOKafkaConsumer("roundtrip", bootstrap_servers=kafka_broker.bootstrap, group_id="g1",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 30)
            await consumer.commit()
            return record.value
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == b"hello"


def test_redis_answers_set_and_get(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.set("k", "v")
    assert client.get("k") == b"v"


def test_stop_kills_the_processes_it_started(tmp_path):
    server = RedisServer().start(tmp_path / "redis")
    pid = server.pid
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_redis_starts_from_a_relative_run_directory_as_the_demo_passes_it(tmp_path, monkeypatch):
    import redis

    monkeypatch.chdir(tmp_path)
    server = RedisServer().start("run/demo/redis")
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert (tmp_path / "run/demo/redis/redis.log").exists()
    finally:
        server.stop()
