"""Faust's hand-over of each fetched record to the agents, without four tasks per record.

faust 0.15.3's fetch loop (`Consumer._drain_messages`) passes every record to its conductor with

    await self.wait_first(callback(message), self.suspend_flow.wait())

so that a rebalance (which sets `suspend_flow`) abandons a hand-over that is stuck waiting. mode's
`wait_first` wraps both coroutines, and the service's stopped and crashed events, in four tasks,
waits for the first to finish and cancels the other three: ~33 us per record on the benchmark
machine, against ~0.5 us for the hand-over itself, which almost never waits -- only while flow is
suspended, faust's producer buffer is full or an agent's queue is full (bench/README.md, thirteenth
session).

`deliver_without_racing_tasks` keeps that contract at a fraction of the cost: the callback is
stepped once by hand; if it finishes in that step there is nothing to race. If it waits, the rest
of it runs as a task raced against the suspension by faust's own `wait_first`, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine

from mode.services import WaitResults


def deliver_without_racing_tasks(consumer) -> None:
    """Install the stepped hand-over on faust's consumer (before its fetch loop starts)."""
    race = consumer.wait_first
    suspended: asyncio.Event = consumer.suspend_flow
    stopped, crashed = consumer._stopped, consumer._crashed

    async def wait_first(*coros, timeout=None):
        if (len(coros) != 2 or timeout is not None or not _waits_on(coros[1], suspended)
                or suspended.is_set() or stopped.is_set() or crashed.is_set()):
            return await race(*coros, timeout=timeout)  # not the fetch loop's hand-over, or not now
        hand_over, suspension = coros
        try:
            yielded = hand_over.send(None)
        except StopIteration as done:
            suspension.close()
            return WaitResults([hand_over], [done.value], False)
        except BaseException:
            suspension.close()
            raise
        return await race(finish_stepped(hand_over, yielded), suspension)

    consumer.wait_first = wait_first


def _waits_on(coro: Any, event: asyncio.Event) -> bool:
    """Whether `coro` is `event.wait()`, not started yet."""
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event


async def finish_stepped(coro: Coroutine, yielded: Any) -> Any:
    """Run the rest of a coroutine stepped by hand until it yielded `yielded`, as its own task
    would: wait for each future it yields, then resume it (it reads the future's outcome itself);
    a cancellation of this task cancels that future and is thrown into the coroutine."""
    while True:
        try:
            if yielded is None:  # a bare yield (asyncio.sleep(0)): one turn of the loop
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False  # as a task does on taking the future
                await asyncio.wait((yielded,))  # done, whatever its outcome; never raises it
        except asyncio.CancelledError as cancelled:
            if yielded is not None:
                yielded.cancel()
            try:
                yielded = coro.throw(cancelled)
            except StopIteration as done:
                return done.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as done:
            return done.value
