"""Dead letters are logged as a rate: one INFO line per minute at most, with counts by reason."""

from stream.worker.entity_stage import DeadLetterLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_with_the_counts_by_reason():
    clock = Clock()
    tally = DeadLetterLog(every=60.0, clock=clock)
    lines = [tally.note(reason) for reason in ["future_event"] * 3 + ["malformed_json"] * 5]
    assert lines == [None] * 8
    clock.now += 30
    assert tally.note("oversized") is None
    clock.now += 31
    assert tally.note("oversized") == "10 dead letters in the last 61s: malformed_json 5, future_event 3, oversized 2"
    assert tally.due() is None  # counts start again


def test_a_burst_that_stops_is_still_reported_by_due():
    clock = Clock()
    tally = DeadLetterLog(every=60.0, clock=clock)
    tally.note("bad_value")
    clock.now += 59
    assert tally.due() is None
    clock.now += 1
    assert tally.due() == "1 dead letters in the last 60s: bad_value 1"
    clock.now += 600
    assert tally.due() is None  # nothing new: nothing to say
