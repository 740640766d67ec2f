"""JSON bytes that are kept in memory: orjson's output copied to its exact size.

orjson (3.12 and later) hands back the buffer it wrote into -- at least ~4 KB, larger outputs
rounded up to a power of two -- and never shrinks it (its `finish()` sets the object's size
before resizing, so the resize returns early; Home Assistant trims the same way). Sent and
dropped, that costs nothing; kept, a 30-byte table key holds 4 KB and a 15 KB batch of facts
16-32 KB. What the worker keeps -- table keys and values (copied where they enter a store,
worker._store_put_all), the publisher's memory of what it sent, remembered partitions -- is
copied with `kept`.
"""

from __future__ import annotations


def kept(data: bytes) -> bytes:
    """A copy of `data` allocated at its own size."""
    return bytes(memoryview(data))
