"""A scope's partials read back from the scope-partials table (stream/worker/scope_stage.py `scope_partials_from_stored`):
per source partition the newest (generation, sequence) wins, whichever stored form it came in, and
the vectors are kept as tuples the cyclic GC stops walking."""

from __future__ import annotations

import gc
from decimal import Decimal

import orjson

from stream.stages.scope_board import sum_vectors
from stream.worker.scope_stage import scope_partials_from_stored


def stored(partition: int, by_source: dict[int, list], versions: dict[int, list]) -> bytes:
    return orjson.dumps({"part": partition, "by": {str(s): v for s, v in by_source.items()},
                         "ver": {str(s): v for s, v in versions.items()}})


def test_each_source_keeps_its_newest_partial_across_both_stored_forms():
    as_written = stored(3, {0: [1, 2, "5.50"], 1: [10, 0, "0.00"]}, {0: [2, 7], 1: [1, 9]})
    after_recovery = orjson.loads(stored(3, {0: [9, 9, "9.00"], 1: [20, 1, "1.25"]}, {0: [2, 6], 1: [2, 1]}))
    entry = scope_partials_from_stored(3, [as_written, None, after_recovery])
    assert entry.own_partition == 3
    assert entry.by_source == {0: (1, 2, Decimal("5.50")), 1: (20, 1, Decimal("1.25"))}
    assert entry.versions == {0: (2, 7), 1: (2, 1)}
    assert sum_vectors(entry.by_source.values()) == [21, 3, Decimal("6.75")]


def test_stored_vectors_drop_out_of_the_cyclic_gc_walk():
    entry = scope_partials_from_stored(0, [stored(0, {0: [1, "int:36893488147419103232"], 5: [2, "3.00"]}, {0: [1, 1], 5: [1, 2]})])
    gc.collect()
    vectors = [*entry.by_source.values(), *entry.encoded.values()]
    assert len(vectors) == 4
    assert [vector for vector in vectors if gc.is_tracked(vector)] == []
