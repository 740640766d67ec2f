"""While the worker catches up on a backlog, every partition gets a turn soon. aiokafka alone hands
out one partition's whole fetch (faust's 1 MiB, thousands of events) before the next partition's;
the worker sends each partition it served to the back of the fetch buffer
(stream/worker/app.py `take_partition_turns`). Read from a real broker, the way faust reads."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream.kafka.faust_internals import fetch_buffered, send_served_partitions_to_the_back

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


FAUST_FETCH_BYTES = 1024**2  # faust's consumer_max_fetch_size, which the worker keeps
FAUST_MAX_RECORDS = 500  # the worker's broker_max_poll_records


async def _delivery_order(bootstrap: str, topic: str, in_turns: bool,
                          buffered_after_first: dict | None = None) -> list[int]:
    """Partitions of the records in the order the consumer hands them out, read the way faust
    reads (getmany with its max_records), with or without the worker's turns."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=FAUST_FETCH_BYTES, max_poll_records=FAUST_MAX_RECORDS)
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        order: list[int] = []
        while len(order) < PARTITIONS * PER_PARTITION:
            batch = await consumer.getmany(timeout_ms=5_000, max_records=FAUST_MAX_RECORDS)
            assert batch, f"nothing more after {len(order)} records"
            if in_turns:
                send_served_partitions_to_the_back(consumer, batch)
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
def backlog_topic(kafka_broker):
    return asyncio.run(_backlog(kafka_broker.bootstrap))


def test_aiokafka_alone_makes_a_partition_wait_for_the_others_whole_backlog(kafka_broker, backlog_topic):
    order = asyncio.run(_delivery_order(kafka_broker.bootstrap, backlog_topic, in_turns=False))
    assert _longest_wait(order) >= (PARTITIONS - 1) * PER_PARTITION * 0.9  # nearly everything else first


def test_catching_up_every_partition_gets_a_turn_after_at_most_one_batch_of_each_other(
        kafka_broker, backlog_topic):
    order = asyncio.run(_delivery_order(kafka_broker.bootstrap, backlog_topic, in_turns=True))
    assert sorted(order) == sorted(p for p in range(PARTITIONS) for _ in range(PER_PARTITION))
    # the first fetch response may hold only some partitions: allow one late round
    assert _longest_wait(order) <= 2 * (PARTITIONS - 1) * FAUST_MAX_RECORDS, _longest_wait(order)


def test_partitions_behind_others_in_the_fetch_buffer_count_as_waiting_not_stalled(kafka_broker, backlog_topic):
    seen: dict[int, tuple[bool, bool]] = {}
    asyncio.run(_delivery_order(kafka_broker.bootstrap, backlog_topic, in_turns=True, buffered_after_first=seen))
    waiting = [p for p, (delivered, buffered) in seen.items() if not delivered]
    assert waiting, f"the first batch held every partition: {seen}"
    assert all(seen[p][1] for p in waiting), seen
