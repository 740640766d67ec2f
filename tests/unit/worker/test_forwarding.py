"""A record is applied only on its entity's partition (murmur2 of the entity key, Kafka's default
partitioner); arriving anywhere else -- another partitioner, another key, the mixed topic -- it is
forwarded there unchanged, before any engine sees it."""

from __future__ import annotations

import asyncio
import zlib

import orjson
from faust.types import TP
from faust.types.tuples import Message

from stream.core.config import KpiSettings, ServiceSettings, parse_clock
from stream.core.engine import Family
from stream.stages.outgoing import kafka_partition
from stream.worker.app import KpiWorker
from stream.worker.forwarding import FORWARDED_FROM_HEADER, Arrival, forward_partition, forwarded
from tests.e2e.harness import counter_total

PARTITIONS = 8
ORDER = orjson.dumps({"event_id": "e1", "type": "order.placed", "occurred_at": "2026-11-24T10:00:00Z",
                      "outlet_id": "outlet-17", "order_id": "x1", "amount": "12.50", "currency": "USD", "lines": 2})
KEY = b"outlet-17"
MURMUR2 = kafka_partition(KEY, PARTITIONS)
CRC32 = zlib.crc32(KEY) % PARTITIONS  # librdkafka's default partitioner for a keyed record


def arrival(family=Family.OUTLET, partition=MURMUR2, key=KEY, topic="sales.orders") -> Arrival:
    return Arrival(family, topic, partition, 41, key, 1_764_000_000_123)


def test_the_two_partitioners_disagree_on_the_test_key():
    assert CRC32 != MURMUR2


def test_a_record_on_its_entity_partition_of_its_family_topic_stays():
    assert forward_partition(arrival(), Family.OUTLET, KEY, PARTITIONS) is None


def test_a_record_placed_by_another_partitioner_goes_to_its_key_partition():
    assert forward_partition(arrival(partition=CRC32), Family.OUTLET, KEY, PARTITIONS) == MURMUR2


def test_a_record_with_another_key_or_from_the_mixed_topic_goes_to_its_entity_partition():
    assert forward_partition(arrival(key=b"rep-3"), Family.OUTLET, KEY, PARTITIONS) == MURMUR2
    assert forward_partition(arrival(key=None), Family.OUTLET, KEY, PARTITIONS) == MURMUR2
    assert forward_partition(arrival(family=None, topic="sales.events"), Family.OUTLET, KEY, PARTITIONS) == MURMUR2
    assert forward_partition(arrival(family=Family.LEAD), Family.OUTLET, KEY, PARTITIONS) == MURMUR2


def test_the_forwarded_copy_keeps_the_bytes_timestamp_and_headers_and_says_where_it_came_from():
    copy = forwarded(arrival(partition=CRC32, key=None), KEY, ORDER, MURMUR2,
                     [("traceparent", b"00-ab"), (FORWARDED_FROM_HEADER, b"elsewhere")])
    assert (copy.partition, copy.key, copy.value, copy.timestamp_ms) == (MURMUR2, KEY, ORDER, 1_764_000_000_123)
    assert list(copy.headers) == [("traceparent", b"00-ab"), (FORWARDED_FROM_HEADER, f"sales.orders/{CRC32}/41".encode())]


class SentBatches:
    def __init__(self, worker: KpiWorker) -> None:
        self.sent: list[tuple[str, list]] = []
        worker.entity_stage.batches = self

    async def send(self, topic, messages, on_delivered=None) -> int:
        self.sent.append((topic, list(messages)))
        return len(self.sent[-1][1])

    async def partition_count(self, topic: str) -> int:
        return PARTITIONS


def handled(partition: int, key: bytes = KEY, topic: str = "p.sales.orders", family=Family.OUTLET):
    settings = ServiceSettings(kpi=KpiSettings(clock=parse_clock("2026-11-24T12:00:00Z")), app_id="kpi-test",
                               topic_prefix="p.", partitions=PARTITIONS)
    worker = KpiWorker(settings)
    batches = SentBatches(worker)
    stage = worker.entity_stage
    stage.guard.admit_next = lambda message: True
    message = Message(topic=topic, partition=partition, offset=41, timestamp=1_764_000_000.123, timestamp_type=0,
                      headers=[], key=key, value=ORDER, checksum=None, tp=TP(topic, partition))

    async def handle() -> None:
        await stage.handle(family, message)
        await stage.send_forwards()
    asyncio.run(handle())
    worker.tally.flush()
    return worker, batches.sent


def test_the_entity_stage_forwards_a_crc32_placed_order_without_applying_it_and_counts_it():
    worker, sent = handled(CRC32)
    assert worker.facts.pending_count == 0 and not worker.entity_stage.entities
    [(topic, [copy])] = sent
    assert (topic, copy.partition, copy.key, copy.value, copy.timestamp_ms) == (
        "p.sales.orders", MURMUR2, KEY, ORDER, 1_764_000_000_123)
    metrics = worker.metrics.registry
    assert counter_total(generate_text(metrics), "kpi_stream_records_repartitioned_total", topic="p.sales.orders") == 1


def test_the_entity_stage_applies_an_order_on_its_murmur2_partition_and_forwards_nothing():
    worker, sent = handled(MURMUR2)
    assert sent == []
    assert worker.facts.pending_count == 1 and (Family.OUTLET, MURMUR2) in worker.entity_stage.entities


def test_the_router_forwards_a_mixed_topic_record_to_its_type_topic_partition():
    worker, sent = handled(CRC32, key=b"anything", topic="p.sales.events", family=None)
    assert [(topic, [(m.partition, m.key) for m in messages]) for topic, messages in sent] == [
        ("p.sales.orders", [(MURMUR2, KEY)])]
    assert worker.facts.pending_count == 0


def generate_text(registry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()
