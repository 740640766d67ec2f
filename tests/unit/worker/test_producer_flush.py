"""Faust's producer buffer flush must wait for every queued changelog write (offsets are
committed right after it); faust 0.15.3's own flush gives up after 0.1 s without a send."""

from __future__ import annotations

import asyncio

import pytest
from faust.transport.producer import ProducerBuffer

from stream.kafka.faust_internals import drain_producer_buffer_fully

pytestmark = pytest.mark.unit


class SlowBuffer:
    """Stands in for a ProducerBuffer whose sender is starved: one message leaves every 0.25 s."""

    flush_atmost = ProducerBuffer.flush_atmost  # faust's own loop, to show what it does

    def __init__(self, queued: int) -> None:
        self.size = queued
        self.state = "running"
        self.message_sent = asyncio.Event()

    async def sender(self) -> None:
        while self.size:
            await asyncio.sleep(0.25)
            self.size -= 1
            self.message_sent.set()


def test_faust_flush_returns_with_messages_still_buffered():
    async def scenario() -> int:
        buffer = SlowBuffer(queued=3)
        sending = asyncio.create_task(buffer.sender())
        await buffer.flush_atmost(None)
        left = buffer.size
        await sending
        return left

    assert asyncio.run(scenario()) > 0


def test_patched_flush_returns_only_when_the_buffer_is_empty():
    async def scenario() -> int:
        buffer = SlowBuffer(queued=3)
        drain_producer_buffer_fully(buffer)
        sending = asyncio.create_task(buffer.sender())
        await buffer.flush()
        left = buffer.size
        await sending
        return left

    assert asyncio.run(scenario()) == 0


def test_patched_flush_raises_when_the_producer_stopped_with_messages_left():
    async def scenario() -> None:
        buffer = SlowBuffer(queued=2)
        buffer.state = "stopping"
        drain_producer_buffer_fully(buffer)
        await buffer.flush()

    with pytest.raises(RuntimeError, match="2 unsent messages"):
        asyncio.run(scenario())
