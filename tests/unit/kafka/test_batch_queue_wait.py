"""A send that waits for room in the producer's queue marks the worker as held back by the broker
(stream/kafka/batches.py `BatchProducer.held_back`): the lag observer does not take partitions that
make no progress meanwhile for stalls."""

from __future__ import annotations

import asyncio

from stream.kafka.batches import QUEUE_WAIT_SECONDS, BatchProducer
from stream.stages.outgoing import Outgoing


class Batch:
    def append(self, **_fields):
        return object()

    def close(self) -> None:
        pass


class SlowQueueProducer:
    """send_batch returns once its queue has room: after `wait` seconds."""

    def __init__(self, wait: float) -> None:
        self.wait = wait

    def create_batch(self):
        return Batch()

    async def send_batch(self, batch, topic, partition):
        await asyncio.sleep(self.wait)
        return asyncio.get_running_loop().create_future()


def test_a_send_waiting_for_queue_room_holds_the_worker_back_while_it_waits_and_for_a_while_after():
    producer = SlowQueueProducer(QUEUE_WAIT_SECONDS + 0.2)
    batches = BatchProducer(lambda: producer, lambda topic, error: None)
    seen_while_waiting = []

    async def run():
        send = asyncio.ensure_future(batches.send("t", [Outgoing(0, b"k", b"v")]))
        await asyncio.sleep(0.1)
        seen_while_waiting.append(batches.held_back(0.0))
        await send

    assert not batches.held_back(10.0)
    asyncio.run(run())
    assert seen_while_waiting == [True]
    assert batches.held_back(10.0) and not batches.held_back(0.0)


def test_a_send_with_room_at_once_holds_nothing_back():
    batches = BatchProducer(lambda: SlowQueueProducer(0.0), lambda topic, error: None)
    asyncio.run(batches.send("t", [Outgoing(0, b"k", b"v")]))
    assert not batches.held_back(10.0)
