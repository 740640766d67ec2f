"""The dashboard's in-memory trends: a bounded ring per series, and the worst movers over it."""

from __future__ import annotations

import math

import pytest

from stream.stages.trends import TrendRing, picks, worst_movers


def test_samples_come_back_oldest_first_aligned_with_their_instants():
    ring = TrendRing(capacity=4, max_series=10)
    ring.record(10.0, {"a": 1, "b": 5})
    ring.record(15.0, {"a": 2})  # b has no value at 15
    ring.record(20.0, {"a": 3, "b": 7})
    assert ring.instants() == [10.0, 15.0, 20.0]
    assert ring.points("a") == [1.0, 2.0, 3.0]
    assert ring.points("b") == [5.0, None, 7.0]
    assert ring.points("unknown") == [None, None, None]
    assert ring.latest_instant() == 20.0


def test_the_ring_keeps_only_the_last_capacity_samples():
    ring = TrendRing(capacity=3, max_series=10)
    for i in range(10):
        ring.record(float(i), {"a": i * 10})
    assert ring.instants() == [7.0, 8.0, 9.0]
    assert ring.points("a") == [70.0, 80.0, 90.0]
    assert ring.samples == 10


def test_a_series_that_joins_late_is_missing_before_it_joined():
    ring = TrendRing(capacity=4, max_series=10)
    ring.record(1.0, {"a": 1})
    ring.record(2.0, {"a": 1, "b": 2})
    assert ring.points("b") == [None, 2.0]


def test_a_null_value_is_a_gap_not_a_zero():
    ring = TrendRing(capacity=4, max_series=10)
    ring.record(1.0, {"r": 0.5})
    ring.record(2.0, {"r": None})
    ring.record(3.0, {"r": 0.25})
    assert ring.points("r") == [0.5, None, 0.25]


def test_memory_is_bounded_by_max_series_whatever_the_number_of_scopes():
    ring = TrendRing(capacity=5, max_series=3)
    ring.record(1.0, {f"territory-{i}": i for i in range(100)})
    assert len(ring) == 3
    assert ring.keys() == ["territory-0", "territory-1", "territory-2"]  # the first offered are kept
    assert ring.refused == 97
    ring.record(2.0, {f"territory-{i}": i for i in range(100)})
    assert len(ring) == 3 and ring.refused == 97


def test_a_series_gone_for_a_whole_ring_is_dropped_and_makes_room():
    ring = TrendRing(capacity=3, max_series=2)
    ring.record(1.0, {"old": 1, "kept": 1})
    ring.record(2.0, {"kept": 1, "new": 5})  # full: new refused
    assert "new" not in ring and ring.refused == 1
    ring.record(3.0, {"kept": 1})
    ring.record(4.0, {"kept": 1, "new": 6})  # "old" last held at sample 0, the ring now spans 1..3
    assert "old" not in ring and "new" in ring
    assert ring.points("new") == [None, None, 6.0]
    assert ring.refused == 0


def test_samples_must_not_go_back_in_time():
    ring = TrendRing(capacity=3, max_series=2)
    ring.record(5.0, {"a": 1})
    with pytest.raises(ValueError):
        ring.record(4.0, {"a": 1})
    with pytest.raises(ValueError):
        TrendRing(capacity=1, max_series=2)


def test_move_is_first_to_last_known_value_over_the_ring():
    ring = TrendRing(capacity=4, max_series=10)
    ring.record(1.0, {"a": None})
    ring.record(2.0, {"a": 40})
    ring.record(3.0, {"a": 35})
    ring.record(4.0, {"a": 30})
    move = ring.move("a")
    assert (move.first, move.last, move.first_at, move.last_at) == (40.0, 30.0, 2.0, 4.0)
    assert move.change == -10.0
    assert move.change_ratio == pytest.approx(-0.25)
    ring.record(5.0, {"b": 0})
    ring.record(6.0, {"b": 3})
    assert ring.move("b").change_ratio is None  # from 0: no ratio
    assert ring.move("unknown") is None


def test_one_sample_is_no_move():
    ring = TrendRing(capacity=4, max_series=10)
    ring.record(1.0, {"a": 5})
    assert ring.move("a") is None
    assert worst_movers(ring, ["a"], 5) == []


def test_worst_movers_are_the_largest_drops_only():
    ring = TrendRing(capacity=10, max_series=10)
    ring.record(0.0, {"T1": 100, "T2": 50, "T3": 10, "T4": 7, "T5": 20})
    ring.record(5.0, {"T1": 90, "T2": 50, "T3": 30, "T4": 2, "T5": 15})
    movers = worst_movers(ring, ["T1", "T2", "T3", "T4", "T5"], limit=10)
    assert [(m.key, m.change) for m in movers] == [("T1", -10.0), ("T4", -5.0), ("T5", -5.0)]
    assert [m.key for m in worst_movers(ring, ["T1", "T2", "T3", "T4", "T5"], limit=2)] == ["T1", "T4"]
    assert [m.key for m in worst_movers(ring, ["T2", "T3"], limit=5)] == []  # flat and rising


def test_worst_movers_look_only_at_the_trend_window():
    ring = TrendRing(capacity=2, max_series=10)
    ring.record(0.0, {"T1": 100})  # leaves the ring
    ring.record(5.0, {"T1": 10})
    ring.record(10.0, {"T1": 12})
    assert worst_movers(ring, ["T1"], 5) == []


def test_picks_keep_the_last_sample_and_at_most_the_asked_count():
    assert picks(5, 10) == [0, 1, 2, 3, 4]
    chosen = picks(360, 120)
    assert len(chosen) <= 121 and chosen[0] == 0 and chosen[-1] == 359
    assert chosen == sorted(set(chosen))
    assert picks(7, 1) == [6]
    assert picks(0, 10) == []


def test_nan_never_leaks_out():
    ring = TrendRing(capacity=3, max_series=3)
    ring.record(1.0, {"a": 1})
    ring.record(2.0, {"b": 1})
    assert all(p is None or not math.isnan(p) for p in ring.points("a") + ring.points("b"))
