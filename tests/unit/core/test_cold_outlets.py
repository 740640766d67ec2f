"""The heap of outlets at rest (stream/core/cold_outlets.py) behaves as a dict of bytes: whatever was put
last under an id is what `get` returns, across growth of the index, records that outgrow their
room and move, free records reused, ids of any text, and a pickle round trip."""

from __future__ import annotations

import pickle

from hypothesis import given, settings as hsettings, strategies as st

from stream.core.cold_outlets import ColdOutlets, record_head, record_size

ids = st.one_of(
    st.sampled_from([f"o{n}" for n in range(40)]),  # few ids: many rewrites of the same record
    st.text(min_size=0, max_size=30),  # any text, the empty id and lone surrogates included
    st.text(min_size=250, max_size=260),  # 255 bytes and more: the record's long head
)
payloads = st.binary(min_size=0, max_size=300)


@hsettings(max_examples=300, deadline=None)
@given(writes=st.lists(st.tuples(ids, payloads, st.sampled_from(["none", "fresh", "old"])), max_size=400),
       absent=st.lists(st.text(max_size=12), max_size=20))
def test_the_heap_returns_what_was_put_last_under_each_id_like_a_dict(writes, absent):
    """Each write passes no handle, the handle `take` gives just before, or one taken at any earlier
    write -- of a record moved since, an index grown since, or another id's record in its place."""
    heap, model, handles = ColdOutlets(), {}, []
    for outlet_id, packed, handle_kind in writes:
        taken, handle = heap.take(outlet_id)
        assert taken == model.get(outlet_id)
        handles.append(handle)
        chosen = {"none": 0, "fresh": handle, "old": handles[len(packed) % len(handles)]}[handle_kind]
        assert heap.put(outlet_id, packed, chosen) == (outlet_id not in model)
        model[outlet_id] = packed
    assert len(heap) == len(model)
    for outlet_id, packed in model.items():
        got = heap.get(outlet_id)
        assert type(got) is bytes and got == packed
    for outlet_id in absent:
        if outlet_id not in model:
            assert heap.get(outlet_id) is None
    assert dict(heap.items()) == model
    live = sum(record_size(len(record_head(len(key), len(packed))) + len(key) + len(packed))
               for key, packed in ((outlet_id.encode("utf-8", "surrogatepass"), packed) for outlet_id, packed in model.items()))
    assert live + heap.free_bytes == len(heap._heap), "every byte of the heap is in one live or one free record"  # noqa: SLF001
    restored = pickle.loads(pickle.dumps(heap, protocol=pickle.HIGHEST_PROTOCOL))
    assert dict(restored.items()) == model and len(restored) == len(model)
    assert all(restored.get(outlet_id) == packed for outlet_id, packed in model.items())


def test_a_rewrite_that_keeps_the_record_size_stays_in_place_and_a_resized_one_frees_its_old_record():
    heap = ColdOutlets()
    heap.put("o1", b"x" * 20)  # 4-byte head + 2-byte id + 20: a 28-byte record
    size = heap.heap_bytes()
    heap.put("o1", b"y" * 22)
    assert heap.heap_bytes() == size and heap.get("o1") == b"y" * 22, "still 28 bytes: in place"
    heap.put("o1", b"z" * 200)
    assert heap.get("o1") == b"z" * 200 and heap.free_bytes == 28, "moved: the 28-byte record is free"
    size = heap.heap_bytes()
    heap.put("o2", b"w" * 20)  # a new record of the freed size takes its place
    assert heap.free_bytes == 0 and heap.heap_bytes() == size
    assert heap.get("o2") == b"w" * 20 and heap.get("o1") == b"z" * 200


@given(needed=st.integers(1, 1 << 24))
def test_a_record_has_room_for_its_contents_in_whole_words_and_wastes_at_most_an_eighth_beyond_128_bytes(needed):
    size = record_size(needed)
    assert size >= needed and size % 4 == 0
    assert size - needed < (4 if needed <= 128 else needed / 8)


def test_a_million_ids_grow_the_index_and_every_one_is_found():
    heap = ColdOutlets()
    count = 1_000_000
    for n in range(count):
        heap.put(f"outlet-{n:07d}", n.to_bytes(3, "little"))
    assert len(heap) == count
    assert all(heap.get(f"outlet-{n:07d}") == n.to_bytes(3, "little") for n in range(0, count, 997))
    assert heap.get("outlet-1000000") is None
    # per id: its 24-byte record (4 head + 14 id + 3 state, rounded up) and at most three 4-byte index
    # slots (the index doubles when two thirds are used)
    assert heap.heap_bytes() <= count * (24 + 3 * 4)


def test_a_state_of_16_mib_or_more_keeps_its_length_in_the_long_head():
    heap = ColdOutlets()
    big = bytes(range(256)) * (1 << 16) + b"tail"  # 2**24 + 4 bytes
    heap.put("o1", b"small")
    heap.put("o2", big)
    heap.put("o1", big)
    assert heap.get("o1") == big and heap.get("o2") == big and len(heap) == 2
    heap.put("o2", b"small again")
    assert heap.get("o2") == b"small again" and heap.get("o1") == big


def test_ids_of_254_255_and_256_bytes_are_each_found_once():
    heap = ColdOutlets()
    ids = [letter * size for size in (254, 255, 256) for letter in "ab"]
    for n, outlet_id in enumerate(ids):
        assert heap.put(outlet_id, bytes([n]))
    for n, outlet_id in enumerate(ids):
        assert not heap.put(outlet_id, bytes([n, n])), "already there: rewritten, not added"
        assert heap.get(outlet_id) == bytes([n, n])
    assert len(heap) == len(ids) and dict(heap.items()) == {outlet_id: bytes([n, n]) for n, outlet_id in enumerate(ids)}
