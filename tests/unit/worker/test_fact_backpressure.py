"""FactLog.wait_for_room records a backpressure wait only when it waited (stream/worker/facts.py)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter

from stream.worker.facts import FACT_BACKLOG_LIMIT, FactLog


def fact_log() -> FactLog:
    counter = Counter("waited", "seconds", registry=CollectorRegistry())
    return FactLog(None, set(), None, {}, lambda key: None, counter)


def test_waiting_with_room_returns_at_once_and_holds_nothing_back():
    log = fact_log()
    asyncio.run(log.wait_for_room())
    assert log.has_room() and not log.held_back(60.0)


def test_a_full_backlog_holds_the_worker_back():
    log = fact_log()
    log.unwritten = FACT_BACKLOG_LIMIT
    assert not log.has_room() and log.held_back(0.0)
