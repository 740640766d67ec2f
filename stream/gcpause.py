"""Pausing Python's cyclic garbage collector while engine state is built in bulk.

Engine state is acyclic (dicts, lists, tuples and slotted dataclasses that never point back), so
reference counting alone frees it; but every full collection walks all of it, and while a
replay or a rebuild grows the state by millions of objects the collector runs full collections
again and again (~29 % of rebuild time in bench/scaling.py). Pausing it for the bulk load and
re-enabling it afterwards loses nothing: whatever cyclic garbage appeared meanwhile is collected
by the next collection.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
