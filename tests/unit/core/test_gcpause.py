"""The cyclic GC around the worker (stream/core/gcpause.py): paused for bulk loads, its pauses
measured, long-lived objects frozen out of its walk."""

import gc
import weakref

import pytest

from stream.core.gcpause import (
    YOUNG_COLLECTION_THRESHOLD, GcPauseRecorder, collect_young_less_often, cyclic_gc_paused, freeze_long_lived,
)


def test_the_collector_is_off_inside_and_on_again_after_even_when_the_load_fails():
    gc.enable()
    with pytest.raises(RuntimeError):
        with cyclic_gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("a bad fact")
    assert gc.isenabled()


def test_a_collector_the_caller_had_switched_off_stays_off():
    gc.disable()
    try:
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


class Node:
    pass


def test_each_collection_is_reported_with_its_generation_and_duration():
    seen: list[tuple[int, float]] = []
    recorder = GcPauseRecorder(lambda generation, seconds: seen.append((generation, seconds))).install()
    try:
        gc.collect(1)
        gc.collect()
    finally:
        recorder.uninstall()
    assert [generation for generation, _ in seen][-2:] == [1, 2]
    assert all(seconds >= 0 for _, seconds in seen)
    reported = len(seen)
    gc.collect()
    assert len(seen) == reported, "an uninstalled recorder reports nothing"


def test_frozen_objects_leave_the_collectors_walk_but_are_still_freed_by_refcount():
    survivor = Node()
    alive = weakref.ref(survivor)
    try:
        frozen = freeze_long_lived()
        assert frozen >= 1 and gc.get_freeze_count() == frozen
        assert not any(obj is survivor for obj in gc.get_objects())
        del survivor
        assert alive() is None
    finally:
        gc.unfreeze()


def young_collections_while_keeping(count: int) -> int:
    """Young-generation collections run while `count` tracked objects are allocated and kept."""
    seen: list[int] = []
    recorder = GcPauseRecorder(lambda generation, seconds: seen.append(generation)).install()
    try:
        gc.collect()
        kept = [Node() for _ in range(count)]
    finally:
        recorder.uninstall()
    del kept
    return sum(1 for generation in seen if generation == 0)


def test_objects_in_flight_between_turns_no_longer_trigger_a_young_collection_every_few_hundred():
    before = gc.get_threshold()
    cpython_default = (700, *before[1:])  # whatever an earlier test in this process left
    gc.set_threshold(*cpython_default)
    try:
        assert young_collections_while_keeping(5_000) >= 5, "CPython's default collects every ~700"
        assert collect_young_less_often() == cpython_default
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
        assert young_collections_while_keeping(5_000) == 0
    finally:
        gc.set_threshold(*before)
