"""JSON the worker keeps is allocated at its own size (stream/core/jsonbytes.py): orjson's output
holds a buffer of at least ~4 KB, which kept in a table or a cache is mostly empty memory."""

from __future__ import annotations

import tracemalloc

import orjson

from stream.core.jsonbytes import kept


def allocated(make) -> int:
    """Bytes still allocated by what `make()` returns (tracemalloc: what CPython asked for)."""
    tracemalloc.start()
    try:
        kept_objects = [make(n) for n in range(200)]
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept_objects) == 200
    return size // 200


def test_kept_orjson_output_equals_it_and_is_allocated_at_its_size():
    values = [[0, "7f3a", n] for n in range(5)] + [{"p": 1, "f": [["o-1", "e-1", 17, "{}"]] * 40}]
    for value in values:
        assert kept(orjson.dumps(value)) == orjson.dumps(value)
    assert allocated(lambda n: kept(orjson.dumps([n, "7f3a9c", n]))) < 120  # ~50-byte objects
    assert allocated(lambda n: kept(orjson.dumps({"p": n, "f": [["o-1", "e-1", n, "{}"]] * 40}))) < 1_200  # ~1 KB


def test_kept_copies_any_bytes_at_their_size():
    assert allocated(lambda n: kept(orjson.dumps([n, "scope", "territory"]))) < 120
    assert kept(b"abc") == b"abc"
