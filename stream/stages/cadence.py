"""When stage 1 sends partials and stage 2 publishes them: a grid of the wall clock.

Every worker flushes its changed scopes to the scope stage once per publish interval, at the
instants k x interval of the wall clock ("flush k"), so the partials of one scope from every
worker leave together. The scope stage publishes a scope once per flush it has data from: after
the first partial of a newer flush than the one it last published, plus a short settle for the
same flush's partials from other workers. So each key is published at most once per flush
period, and an event waits at most one interval for its flush, then the trip to stage 2.

A shared grid, rather than a timer per stage: with stage 1 flushing on its own timer (say five
times per interval) and stage 2 publishing a scope once its last publication is an interval old,
an event would wait for its flush *and* then up to a whole interval for its scope's slot, and
every busy scope would cross to stage 2 once per flush.

Pure: times are passed in (seconds of the wall clock), no Faust or Kafka here.
"""

from __future__ import annotations

import math


def flush_period(wall_time: float, interval: float) -> int:
    """The flush whose period `wall_time` lies in: flush k runs at k x interval."""
    return math.floor(wall_time / interval)


def next_flush(wall_time: float, interval: float) -> tuple[int, float]:
    """The next flush after `wall_time`: its number and its wall-clock instant. The flush keeps
    this number however early or late the loop that waits for it wakes (an event loop's clock
    is not the wall clock: read after the sleep, an early wake-up named the previous flush)."""
    number = flush_period(wall_time, interval) + 1
    return number, number * interval


def publish_tick(interval: float) -> float:
    """How often the scope stage looks for scopes due for publication; also how long it lets
    other workers' partials of a flush arrive after the first one (the settle)."""
    return min(0.05, max(0.01, interval / 20))


def due_for_publication(pending_flush: int, published_flush: int | None, first_received: float | None,
                        now: float, interval: float, settle: float) -> bool:
    """Whether a changed scope is published now.

    Normally its newest data is from a flush it has not been published for yet: it goes out once
    the first partial of that data has had `settle` seconds for the same flush's partials from
    other workers to arrive. Data of a flush it was already published for came late (another
    worker's, or after a backlog): it goes out with the next flush's, or half way through the
    next period if no newer data comes -- never twice in one period."""
    if published_flush is None or pending_flush > published_flush or _clock_went_back(published_flush, now, interval):
        return first_received is None or now >= first_received + settle
    return now >= (published_flush + 1.5) * interval


def flush_published(pending_flush: int, published_flush: int | None, now: float, interval: float) -> int:
    """The flush a scope counts as published for once `due_for_publication` let it go out."""
    if published_flush is None or _clock_went_back(published_flush, now, interval):
        return pending_flush
    return max(pending_flush, published_flush + 1)


def _clock_went_back(published_flush: int, now: float, interval: float) -> bool:
    """The wall clock is now more than an interval before the flush last published (stepped back,
    say after a VM was restored): the flushes count from the clock again, instead of every scope
    waiting, stale, until the clock is back where it was. Less than an interval is the skew
    between workers' clocks, which the late-partial rule handles."""
    return now < (published_flush - 1) * interval


def age_refresh_due(wall_time: float, interval: float, refreshed_flush: int | None) -> bool:
    """Whether the scopes whose values move with `as_of` alone (lead ages) are marked changed now:
    once per flush period, half way through it, after that flush's partials have normally been
    published (a refresh published first would make them wait for the next flush)."""
    period = flush_period(wall_time, interval)
    if refreshed_flush is not None and refreshed_flush >= period:
        return False
    return wall_time - period * interval >= interval / 2
