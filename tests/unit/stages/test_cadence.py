"""The publication grid (stream/stages/cadence.py): one flush per interval on the wall clock, each key
published at most once per flush, and no partial left unpublished."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.stages.cadence import (age_refresh_due, due_for_publication, flush_period, flush_published, next_flush,
                            publish_tick)

INTERVAL = 1.0
SETTLE = publish_tick(INTERVAL)


def test_flushes_fall_on_whole_multiples_of_the_interval_of_the_wall_clock():
    assert flush_period(1_700_000_000.0, 1.0) == 1_700_000_000
    assert flush_period(1_700_000_000.99, 1.0) == 1_700_000_000
    assert next_flush(1_700_000_000.2, 1.0) == (1_700_000_001, 1_700_000_001.0)
    assert next_flush(10.0, 0.5) == (21, 10.5)  # exactly on a flush instant: the next one
    number, instant = next_flush(10.26, 0.1)
    assert number == 103 and flush_period(instant + 1e-9, 0.1) == 103  # the number names its instant
    assert flush_period(10.26, 0.1) == 102


def test_a_scope_goes_out_once_its_first_partial_of_a_new_flush_has_settled():
    received = 100.03
    assert not due_for_publication(100, 99, received, received + SETTLE / 2, INTERVAL, SETTLE)
    assert due_for_publication(100, 99, received, received + SETTLE, INTERVAL, SETTLE)
    assert due_for_publication(100, None, received, received + SETTLE, INTERVAL, SETTLE)  # never published


def test_a_partial_of_a_flush_already_published_waits_for_the_next_period():
    # another worker's partial of flush 100 arrived after the scope went out for flush 100
    assert not due_for_publication(100, 100, 100.2, 100.9, INTERVAL, SETTLE)
    assert not due_for_publication(100, 100, 100.2, 101.2, INTERVAL, SETTLE)  # flush 101 may still bring more
    assert due_for_publication(100, 100, 100.2, 101.5, INTERVAL, SETTLE)
    assert flush_published(100, 100, 101.5, INTERVAL) == 101  # it counts for period 101: none more in it


def test_lead_ages_are_refreshed_once_per_period_half_way_through_it():
    assert not age_refresh_due(100.3, INTERVAL, 99)
    assert age_refresh_due(100.5, INTERVAL, 99)
    assert not age_refresh_due(100.7, INTERVAL, 100)
    assert age_refresh_due(101.6, INTERVAL, 100)


def test_a_wall_clock_stepped_back_does_not_hold_publication_until_it_catches_up():
    # published for flush 1000; then the clock stepped back ten seconds: flush 990 is the newest
    assert due_for_publication(990, 1000, 990.02, 990.02 + SETTLE, INTERVAL, SETTLE)
    assert flush_published(990, 1000, 990.1, INTERVAL) == 990  # and the next flush, 991, goes out as usual
    assert due_for_publication(991, 990, 991.03, 991.03 + SETTLE, INTERVAL, SETTLE)
    assert not due_for_publication(990, 990, 990.5, 990.9, INTERVAL, SETTLE)  # still once per period


class ScopeStage:
    """The scope stage's bookkeeping for one scope, as KpiWorker keeps it, driven tick by tick."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.published: int | None = None
        self.first_received: float | None = None
        self.unpublished: list[tuple[int, float]] = []  # (flush, arrival) not yet published
        self.publications: list[tuple[float, int, list[tuple[int, float]]]] = []

    def receive(self, flush: int, now: float) -> None:
        if self.first_received is None:
            self.first_received = now
        if self.pending is None or flush > self.pending:
            self.pending = flush
        self.unpublished.append((flush, now))

    def tick(self, now: float) -> None:
        if not self.unpublished:
            return
        pending = self.pending if self.pending is not None else flush_period(now, INTERVAL)
        if due_for_publication(pending, self.published, self.first_received, now, INTERVAL, SETTLE):
            self.published = flush_published(pending, self.published, now, INTERVAL)
            self.publications.append((now, self.published, self.unpublished))
            self.pending, self.first_received, self.unpublished = None, None, []


def publish(arrivals: list[tuple[float, int]]) -> ScopeStage:
    """Feed (arrival time, flush) partials to one scope and tick the stage until all went out."""
    stage = ScopeStage()
    pending = sorted(arrivals)
    now, end = pending[0][0] - 0.01, pending[-1][0] + 3 * INTERVAL
    while now < end:
        while pending and pending[0][0] <= now:
            arrival, flush = pending.pop(0)
            stage.receive(flush, arrival)
        stage.tick(now)
        now += SETTLE
    return stage


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 0.45), min_size=1, max_size=3), min_size=1, max_size=12),
       st.floats(0.0, 0.005))
def test_every_partial_is_published_within_a_period_and_a_half_and_never_twice_per_flush(transits, skew):
    """Up to three workers flush a scope at every grid instant; their partials arrive after
    transits of up to 45 % of the interval (clocks apart by `skew`)."""
    stage = publish([(k * INTERVAL + worker * skew + transit, k)
                     for k, per_worker in enumerate(transits, start=1000)
                     for worker, transit in enumerate(per_worker)])
    assert not stage.unpublished
    flushes = [published for _, published, _ in stage.publications]
    assert flushes == sorted(set(flushes)), "a flush period published twice"
    for at, published, partials in stage.publications:
        assert at >= published * INTERVAL, "published before its period began"
        for flush, arrival in partials:
            assert at - arrival <= 1.5 * INTERVAL + 2 * SETTLE
    if all(max(per_worker) - min(per_worker) + 2 * skew < SETTLE for per_worker in transits):
        # the partials of a flush arrive within the settle: each flush goes out whole, right away
        for at, published, partials in stage.publications:
            assert {flush for flush, _ in partials} == {published}
            assert at - min(arrival for _, arrival in partials) <= 2 * SETTLE + 1e-9


def test_a_scope_fed_by_every_flush_goes_out_an_interval_apart():
    stage = publish([(k * INTERVAL + 0.04, k) for k in range(1000, 1010)])
    times = [at for at, _, _ in stage.publications]
    assert len(times) == 10
    assert all(math.isclose(b - a, INTERVAL, abs_tol=SETTLE) for a, b in zip(times, times[1:]))
