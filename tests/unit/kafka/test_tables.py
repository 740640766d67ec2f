"""The changelog offset an on-disk table store records (stream/kafka/tables.py ChangelogWriter.send): it promises
that every changelog record up to it is in the store, because a store kept across a restart or
a rebalance recovers from there. So a batch acknowledged after another owner's records landed
before it -- a rebalance moved the partition while the batch was on its way -- must not move it.

faust's real RocksDB store (no broker: the acknowledgement is called by the test, as aiokafka
would call it with the batch's offsets)."""

from __future__ import annotations

import asyncio
import logging

from faust.types import TP

from stream.stages.outgoing import Outgoing
from stream.core.config import KpiSettings, ServiceSettings
from stream.core.engine import Family
from stream.worker.app import KpiWorker

PARTITION = 1


class AcknowledgedByTheTest:
    """Stands in for the BatchProducer: keeps each send's acknowledgement for the test to call."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[Outgoing], object]] = []

    async def send(self, topic, messages, on_delivered=None) -> int:
        messages = list(messages)
        self.sent.append((messages, on_delivered))
        return len(messages)

    def acknowledge(self, index: int, first_offset: int) -> None:
        messages, on_delivered = self.sent[index]
        on_delivered(PARTITION, first_offset + len(messages) - 1, messages)


def worker_with_disk_store(tmp_path) -> tuple[KpiWorker, AcknowledgedByTheTest]:
    settings = ServiceSettings(kpi=KpiSettings(), app_id="changelog-offsets", state_dir=str(tmp_path), partitions=2,
                               store="rocksdb://")
    worker = KpiWorker(settings)
    worker.facts.writer.batches = AcknowledgedByTheTest()
    return worker, worker.facts.writer.batches


def send_batch(worker: KpiWorker, name: str, facts: int) -> None:
    table = worker.fact_tables[Family.OUTLET]
    entries = [(f"{name}-{n}".encode(), b'{"p": 1, "f": []}') for n in range(facts)]
    asyncio.run(worker.facts.writer.send(table, PARTITION, entries, store_when_written=True))


def recorded(worker: KpiWorker) -> int | None:
    table = worker.fact_tables[Family.OUTLET]
    return table.data.persisted_offset(TP(table.changelog_topic.get_topic_name(), PARTITION))


def stored_keys(worker: KpiWorker) -> set[bytes]:
    return {key for key in worker.fact_tables[Family.OUTLET].data._db_for_partition(PARTITION).keys()
            if not key.startswith(b"__faust")}


def test_own_batches_following_each_other_move_the_recorded_offset_to_their_end(tmp_path):
    worker, kafka = worker_with_disk_store(tmp_path)
    send_batch(worker, "a", 3)
    send_batch(worker, "b", 2)
    kafka.acknowledge(0, first_offset=0)
    assert recorded(worker) == 2
    kafka.acknowledge(1, first_offset=3)
    assert recorded(worker) == 4
    assert len(stored_keys(worker)) == 5


def test_a_batch_landing_after_another_owners_records_enters_the_store_but_leaves_the_offset(tmp_path, caplog):
    worker, kafka = worker_with_disk_store(tmp_path)
    send_batch(worker, "a", 3)
    kafka.acknowledge(0, first_offset=0)
    send_batch(worker, "late", 2)
    # offsets 3..9 went to the partition's next owner while this batch was on its way
    with caplog.at_level(logging.WARNING, logger="stream.kafka.tables"):
        kafka.acknowledge(1, first_offset=10)
    assert recorded(worker) == 2, "recovering from 11 would skip the other owner's offsets 3..9"
    assert {b"late-0", b"late-1"} <= stored_keys(worker)
    assert "offsets 3..9 were written by another owner" in caplog.text
    # the batches after it find the offset behind them too: it stays, and the gap is told once
    send_batch(worker, "next", 1)
    kafka.acknowledge(2, first_offset=12)
    assert recorded(worker) == 2
    assert caplog.text.count("written by another owner") == 1


def test_a_batch_recovery_already_read_never_moves_the_recorded_offset_back(tmp_path):
    worker, kafka = worker_with_disk_store(tmp_path)
    table = worker.fact_tables[Family.OUTLET]
    send_batch(worker, "a", 2)
    # faust's recovery read the changelog up to offset 20, this batch (at 5..6) included
    table.data.set_persisted_offset(TP(table.changelog_topic.get_topic_name(), PARTITION), 20)
    kafka.acknowledge(0, first_offset=5)
    assert recorded(worker) == 20
