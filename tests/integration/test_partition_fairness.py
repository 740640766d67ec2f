"""While the worker catches up on a backlog, every partition gets a turn soon: aiokafka hands out
one partition's fetched records at a time, a whole fetch before the next partition's, so the
per-partition fetch size (KPI_FETCH_PARTITION_BYTES) bounds how long a partition waits. Read with
a real broker and the consumer settings of the worker's own faust app."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream.config import KpiSettings, ServiceSettings
from stream.worker import KpiWorker, fetch_buffered

pytestmark = pytest.mark.integration

PARTITIONS = 4
PER_PARTITION = 3_000


def _event(partition: int, n: int) -> bytes:  # ~250 bytes, like the generator's orders
    return orjson.dumps({"event_id": f"p{partition}-{n:06d}", "type": "order.placed",
                         "occurred_at": "2026-11-24T10:00:00Z", "outlet_id": f"outlet-{partition}-{n % 97:05d}",
                         "order_id": f"order-{partition}-{n:08d}", "amount": "1234.50", "currency": "USD",
                         "lines": 3, "rep_id": f"rep-{n % 13:04d}", "pad": "x" * 60})


async def _backlog(bootstrap: str) -> str:
    topic = f"fairness-{uuid.uuid4().hex[:8]}"
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")  # default 16 KiB batches
    await producer.start()
    try:
        sent = [await producer.send(topic, _event(p, n), partition=p)
                for n in range(PER_PARTITION) for p in range(PARTITIONS)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return topic


async def _delivery_order(bootstrap: str, topic: str, fetch_bytes: int, max_records: int,
                          buffered_after_first: dict | None = None) -> list[int]:
    """Partitions of the records in the order the consumer hands them out, read the way faust
    reads (getmany with its max_records)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=fetch_bytes, max_poll_records=max_records)
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        order: list[int] = []
        while len(order) < PARTITIONS * PER_PARTITION:
            batch = await consumer.getmany(timeout_ms=5_000, max_records=max_records)
            assert batch, f"nothing more after {len(order)} records"
            if buffered_after_first is not None and not order:
                buffered_after_first.update({tp.partition: (tp in batch, fetch_buffered(consumer, tp))
                                             for tp in partitions})
            for tp, records in batch.items():
                order.extend(tp.partition for _ in records)
        return order
    finally:
        await consumer.stop()


def _longest_wait(order: list[int]) -> int:
    """The most records of other partitions handed out before a partition's first record, or
    between two of its records."""
    last_seen = {p: -1 for p in range(PARTITIONS)}
    longest = 0
    for i, partition in enumerate(order):
        longest = max(longest, i - last_seen[partition] - 1)
        last_seen[partition] = i
    return longest


@pytest.fixture(scope="module")
def worker_conf():
    return KpiWorker(ServiceSettings(kpi=KpiSettings.from_env({}), app_id="kpi-fairness")).app.conf


@pytest.fixture(scope="module")
def backlog_topic(kafka_broker):
    return asyncio.run(_backlog(kafka_broker.bootstrap))


def test_catching_up_every_partition_gets_a_turn_within_a_few_hundred_records_of_the_others(
        kafka_broker, backlog_topic, worker_conf):
    fetch_bytes = worker_conf.consumer_max_fetch_size
    assert fetch_bytes == ServiceSettings.from_env({}).fetch_partition_bytes == 65_536
    order = asyncio.run(_delivery_order(kafka_broker.bootstrap, backlog_topic, fetch_bytes,
                                        worker_conf.broker_max_poll_records))
    records_per_turn = (fetch_bytes + 16_384) // len(_event(0, 0))  # a fetch may end a 16 KiB batch late
    # Turns come roughly round-robin: a partition drained is fetched again behind the ones still
    # buffered, but a re-fetch that returns late lets another partition go twice (seen: 6 turns).
    allowed = 2 * (PARTITIONS - 1) * records_per_turn
    assert sorted(order) == sorted(p for p in range(PARTITIONS) for _ in range(PER_PARTITION))
    assert _longest_wait(order) <= allowed, (_longest_wait(order), allowed)


def test_at_fausts_default_fetch_size_a_partition_waits_for_the_others_whole_backlog(kafka_broker, backlog_topic):
    import faust

    default_bytes = faust.App("kpi-fairness-default").conf.consumer_max_fetch_size  # 1 MiB
    order = asyncio.run(_delivery_order(kafka_broker.bootstrap, backlog_topic, default_bytes, 500))
    assert _longest_wait(order) >= (PARTITIONS - 1) * PER_PARTITION * 0.9  # nearly everything else first


def test_partitions_behind_others_in_the_fetch_buffer_count_as_waiting_not_stalled(
        kafka_broker, backlog_topic, worker_conf):
    seen: dict[int, tuple[bool, bool]] = {}
    asyncio.run(_delivery_order(kafka_broker.bootstrap, backlog_topic, worker_conf.consumer_max_fetch_size,
                                worker_conf.broker_max_poll_records, buffered_after_first=seen))
    waiting = [p for p, (delivered, buffered) in seen.items() if not delivered]
    assert waiting, f"the first batch held every partition: {seen}"
    assert all(seen[p][1] for p in waiting), seen
