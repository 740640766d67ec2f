"""The fetch loop's hand-over without racing tasks (stream/kafka/faust_internals.py) keeps faust's contract:
the record reaches the agent, errors reach the fetch loop, and a suspension (rebalance) abandons
a hand-over that waits -- cancelling what it waited for, as a task's cancellation would."""

from __future__ import annotations

import asyncio

import pytest
from mode import Service

from stream.kafka.faust_internals import deliver_without_racing_tasks, finish_stepped


class FetchLoopLike(Service):
    """What the hand-over needs of faust's consumer: a mode service with `suspend_flow`."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()
        self.races = 0
        race = self.wait_first

        async def counted(*coros, timeout=None):
            self.races += 1
            return await race(*coros, timeout=timeout)

        self.wait_first = counted
        deliver_without_racing_tasks(self)

    async def hand_over(self, coro):
        """What faust's `_drain_messages` does with each record."""
        return await self.wait_first(coro, self.suspend_flow.wait())


def run(test):
    return asyncio.run(test())


def waits_on(awaited, seen: list):
    """A hand-over that waits for `awaited` and notes how it ended: "cancelled" or "delivered"."""
    async def on_message(record):
        try:
            await awaited
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("delivered")
        return record
    return on_message


def test_a_hand_over_that_does_not_wait_delivers_without_racing_tasks():
    async def test():
        loop_like = FetchLoopLike()
        delivered = []

        async def on_message(record):
            delivered.append(record)
            return record

        for record in range(3):
            result = await loop_like.hand_over(on_message(record))
            assert result.results == [record] and not result.stopped
        assert delivered == [0, 1, 2]
        assert loop_like.races == 0
    run(test)


def test_a_hand_over_that_waits_is_finished_by_a_task_raced_against_the_suspension():
    async def test():
        loop_like = FetchLoopLike()
        room = asyncio.get_running_loop().create_future()
        steps = []

        async def on_message(record):
            steps.append("yield")
            await asyncio.sleep(0)
            steps.append("queue full")
            await room
            steps.append("put")
            return record

        asyncio.get_running_loop().call_later(0.05, room.set_result, None)
        result = await loop_like.hand_over(on_message("r1"))
        assert steps == ["yield", "queue full", "put"]
        assert result.results[0] == "r1" and not result.stopped
        assert loop_like.races == 1
    run(test)


def test_a_suspension_abandons_a_waiting_hand_over_and_cancels_what_it_waited_for():
    async def test():
        loop_like = FetchLoopLike()
        never = asyncio.get_running_loop().create_future()
        seen = []
        on_message = waits_on(never, seen)

        asyncio.get_running_loop().call_later(0.05, loop_like.suspend_flow.set)
        result = await loop_like.hand_over(on_message("r1"))
        await asyncio.sleep(0.01)  # the abandoned hand-over's cancellation runs
        assert seen == ["cancelled"]
        assert never.cancelled()
        assert result.results == [True]  # suspend_flow.wait() won the race, as in faust's own
    run(test)


def test_errors_in_the_hand_over_reach_the_fetch_loop_whether_or_not_it_waited():
    async def test():
        loop_like = FetchLoopLike()
        failing = asyncio.get_running_loop().create_future()

        async def fails_at_once(record):
            raise ValueError(f"bad {record}")

        async def fails_after_waiting(record):
            await failing
            return record

        with pytest.raises(ValueError, match="bad r1"):
            await loop_like.hand_over(fails_at_once("r1"))
        asyncio.get_running_loop().call_later(0.02, failing.set_exception, KeyError("r2"))
        with pytest.raises(KeyError, match="r2"):
            await loop_like.hand_over(fails_after_waiting("r2"))
    run(test)


def test_while_suspended_and_for_other_waits_modes_own_race_runs():
    async def test():
        loop_like = FetchLoopLike()

        async def on_message(record):
            return record

        assert (await loop_like.wait_first(on_message("alone"))).results == ["alone"]
        other = asyncio.Event()
        other.set()
        await loop_like.wait_first(on_message("r1"), other.wait())
        assert loop_like.races == 2
        loop_like.suspend_flow.set()
        await loop_like.hand_over(on_message("r2"))
        assert loop_like.races == 3
    run(test)


def test_a_cancellation_that_comes_after_the_awaited_future_finished_still_cancels_the_hand_over():
    async def test():
        loop = asyncio.get_running_loop()
        room = loop.create_future()
        seen = []
        coro = waits_on(room, seen)("r1")
        yielded = coro.send(None)  # stepped by hand, as the fetch loop does
        finishing = asyncio.ensure_future(finish_stepped(coro, yielded))
        await asyncio.sleep(0)  # it now waits for `room`
        room.set_result(None)  # the future is done ...
        finishing.cancel()  # ... and the task is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await finishing
        assert seen == ["cancelled"] and finishing.cancelled()
    run(test)
