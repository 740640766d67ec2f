"""Pausing Python's cyclic garbage collector while engine state is built in bulk.

Engine state is acyclic (dicts, lists, tuples and slotted dataclasses that never point back), so
reference counting alone frees it; but every full collection walks all of it, and while a
replay or a rebuild grows the state by millions of objects the collector runs full collections
again and again (~29 % of rebuild time in bench/scaling.py). Pausing it for the bulk load and
re-enabling it afterwards loses nothing: whatever cyclic garbage appeared meanwhile is collected
by the next collection.

Also here: what the live worker does to the collector once it is up -- freezes its start-up heap
out of the walk (`freeze_long_lived`) and collects the youngest generation less often
(`collect_young_less_often`) -- and how each collection's pause is measured (`GcPauseRecorder`).
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class GcPauseRecorder:
    """Reports each collection's duration to `observe(generation, seconds)`: a full collection
    stops the event loop for as long as it walks the heap, which shows up as publish latency."""

    __slots__ = ("_observe", "_started", "_clock")

    def __init__(self, observe: Callable[[int, float], None]) -> None:
        self._observe = observe
        self._started = 0.0
        self._clock = time.perf_counter

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = self._clock()
        else:
            self._observe(info["generation"], self._clock() - self._started)

    def install(self) -> "GcPauseRecorder":
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


def freeze_long_lived() -> int:
    """Collect once, then move every surviving object to the collector's permanent generation
    (`gc.freeze`), so later full collections walk only what was created since. Meant to run once,
    when the worker is up: its libraries (faust, aiokafka, prometheus_client, ...) and its rebuilt
    state are then a large, stable, acyclic heap that every full collection would walk again.
    Frozen objects are still freed by reference counting; only a cycle among them that becomes
    garbage later stays (bounded: what was alive at this one moment). Returns the objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


# Net allocations of tracked objects (containers) between two collections of the youngest
# generation; CPython's default is 700. A live worker allocates a few dicts and tuples per event
# and per message that faust hands over, most freed by reference counting within a turn of the
# event loop -- but with 700 a collection comes every few hundred events and promotes whatever is
# in flight at that moment (events in batch buffers, a round's messages) to older generations,
# which then fill and trigger their own, dearer collections. At 20,000, at 3,000 events/s, a
# worker spends ~1.5-2.0 s a minute in the collector against ~3.5-4.2 s at 700, with 3 full
# collections a minute against 17 (docs/performance.md, "The cyclic garbage collector"); a young
# collection takes ~5 ms.
YOUNG_COLLECTION_THRESHOLD = 20_000


def collect_young_less_often() -> tuple[int, int, int]:
    """Raise the youngest generation's threshold to YOUNG_COLLECTION_THRESHOLD, keeping the older
    generations' ratios. Returns the thresholds in force before."""
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *before[1:])
    return before
