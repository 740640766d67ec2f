"""Many messages to Kafka as a few record batches, through the Faust app's own producer.

Faust's `topic.send` costs one trip through its producer machinery per message (a future, a
buffer or a task, aiokafka's accumulator): about 100 us each on the benchmark machine, which made
the worker's own output -- KPI updates, scope partials, changelog writes -- a large share of its
CPU at high rates. Here the messages of one round are appended to aiokafka
`BatchBuilder`s, one per partition, and handed to the same aiokafka producer Faust uses. Faust's
`producer.flush()` (run before every offset commit) waits for these batches too, so "committed
implies written" holds as for Faust's own sends.

A batch that still fails after aiokafka's retries (`producer_request_timeout`) means lost output
or state: `on_failure` is called (the worker crashes itself and is rebuilt from the last commit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterable

from stream.kafka.faust_internals import partition_count
from stream.stages.outgoing import Outgoing

log = logging.getLogger(__name__)


# a send that waited this long for room in the producer's queue means the broker is holding back
QUEUE_WAIT_SECONDS = 0.5


class BatchProducer:
    def __init__(self, producer_of: Callable[[], object], on_failure: Callable[[str, BaseException], None]) -> None:
        # `producer_of` returns the started aiokafka producer (Faust creates it at start-up)
        self._producer_of = producer_of
        self._on_failure = on_failure
        # sends waiting for room in the producer's queue: the broker is not acknowledging fast
        # enough (a quota, a slow disk), and whoever sends waits -- on purpose, not a stall
        self._waiting = 0
        self._waited_until = float("-inf")

    async def send(self, topic: str, messages: Iterable[Outgoing],
                   on_delivered: Callable[[int, int, list[Outgoing]], None] | None = None) -> int:
        """Queue `messages` (in order per partition) and return how many; do not wait for the
        broker (only, as aiokafka does, for room in its queue for the partition).
        `on_delivered(partition, last_offset, messages)` runs when a batch is acknowledged, with
        the messages it carried."""
        by_partition: dict[int, list[Outgoing]] = {}
        for message in messages:
            by_partition.setdefault(message.partition, []).append(message)
        producer = self._producer_of()
        count = 0
        for partition, queued in by_partition.items():
            batch, in_batch = producer.create_batch(), []
            for message in queued:
                headers = list(message.headers)
                # a batch's first message is always taken, whatever its size
                timestamp = message.timestamp_ms
                if batch.append(timestamp=timestamp, key=message.key, value=message.value, headers=headers) is None:
                    await self._submit(producer, batch, topic, partition, in_batch, on_delivered)
                    batch, in_batch = producer.create_batch(), []
                    batch.append(timestamp=timestamp, key=message.key, value=message.value, headers=headers)
                in_batch.append(message)
            if in_batch:
                await self._submit(producer, batch, topic, partition, in_batch, on_delivered)
            count += len(queued)
        return count

    async def _submit(self, producer, batch, topic: str, partition: int, messages: list[Outgoing],
                      on_delivered: Callable[[int, int, list[Outgoing]], None] | None) -> None:
        batch.close()
        started = time.monotonic()
        self._waiting += 1
        try:
            future = await producer.send_batch(batch, topic, partition=partition)
        finally:
            self._waiting -= 1
            if time.monotonic() - started > QUEUE_WAIT_SECONDS:
                self._waited_until = time.monotonic()

        def delivered(done: asyncio.Future) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                log.error("kafka: a batch of %d messages to %s[%s] was not written: %r", len(messages), topic,
                          partition, error)
                self._on_failure(topic, error)
            elif on_delivered is not None:
                on_delivered(partition, done.result().offset + len(messages) - 1, messages)

        future.add_done_callback(delivered)

    def held_back(self, within_seconds: float) -> bool:
        """A send waits for room in the producer's queue now, or waited longer than
        QUEUE_WAIT_SECONDS within the last `within_seconds`."""
        return self._waiting > 0 or time.monotonic() - self._waited_until < within_seconds

    async def partition_count(self, topic: str) -> int:
        """The topic's partition count as the producer's metadata knows it (fetched if needed)."""
        return await partition_count(self._producer_of(), topic)
