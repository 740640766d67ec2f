"""The heap of outlets at rest (stream/cold_outlets.py) behaves as a dict of bytes: whatever was put
last under an id is what `get` returns, across growth of the index, records that outgrow their
room and move, free records reused, ids of any text, and a pickle round trip."""

from __future__ import annotations

import pickle

from hypothesis import given, settings as hsettings, strategies as st

from stream.cold_outlets import ColdOutlets

ids = st.one_of(
    st.sampled_from([f"o{n}" for n in range(40)]),  # few ids: many rewrites of the same record
    st.text(min_size=0, max_size=30),  # any text, the empty id and lone surrogates included
)
payloads = st.binary(min_size=0, max_size=300)


@hsettings(max_examples=300, deadline=None)
@given(writes=st.lists(st.tuples(ids, payloads), max_size=400), absent=st.lists(st.text(max_size=12), max_size=20))
def test_the_heap_returns_what_was_put_last_under_each_id_like_a_dict(writes, absent):
    heap, model = ColdOutlets(), {}
    for outlet_id, packed in writes:
        assert heap.put(outlet_id, packed) == (outlet_id not in model)
        model[outlet_id] = packed
    assert len(heap) == len(model)
    for outlet_id, packed in model.items():
        got = heap.get(outlet_id)
        assert type(got) is bytes and got == packed
    for outlet_id in absent:
        if outlet_id not in model:
            assert heap.get(outlet_id) is None
    assert dict(heap.items()) == model
    restored = pickle.loads(pickle.dumps(heap, protocol=pickle.HIGHEST_PROTOCOL))
    assert dict(restored.items()) == model and len(restored) == len(model)
    assert all(restored.get(outlet_id) == packed for outlet_id, packed in model.items())


def test_a_record_that_fits_is_rewritten_in_place_and_one_that_outgrows_it_frees_its_old_room():
    heap = ColdOutlets()
    heap.put("o1", b"x" * 20)
    size = heap.heap_bytes()
    heap.put("o1", b"y" * 10)
    assert heap.heap_bytes() == size and heap.get("o1") == b"y" * 10, "smaller: in place"
    heap.put("o1", b"z" * 200)
    assert heap.get("o1") == b"z" * 200 and heap.free_bytes == 48, "the 48-byte record is free"
    heap.put("o2", b"w" * 20)  # a new record of the freed size takes its place
    assert heap.free_bytes == 0 and heap.get("o2") == b"w" * 20 and heap.get("o1") == b"z" * 200


def test_a_million_ids_grow_the_index_and_every_one_is_found():
    heap = ColdOutlets()
    count = 1_000_000
    for n in range(count):
        heap.put(f"outlet-{n:07d}", n.to_bytes(3, "little"))
    assert len(heap) == count
    assert all(heap.get(f"outlet-{n:07d}") == n.to_bytes(3, "little") for n in range(0, count, 997))
    assert heap.get("outlet-1000000") is None
    assert heap.heap_bytes() < 64 * count, "a 3-byte state costs its 48-byte record and a share of the index"
