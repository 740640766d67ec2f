"""Outlets at rest without a Python object each: one heap of records and an open-addressing index.

A dict of packed bytes (outlet id -> bytes) costs ~300 bytes per outlet at a million outlets
(bench/scaling.py): the dict slot, an id string and a bytes object per outlet
(~170 bytes walked) and the allocator's slack around two million small objects. Here an outlet at
rest is a record in one `bytearray` -- a 4-byte head (the id's and the state's lengths), its id's
UTF-8 bytes and its packed state (outlet_packing.py) -- found through an `array` of 32-bit entries,
each the record's place in the heap. Neither holds a Python object per outlet, so the cyclic
collector has nothing to walk, the allocator nothing to fragment, and a snapshot pickles buffers.

A record's size is a function of its contents: multiples of 4 bytes up to 128, then steps of at
most an eighth. A rewrite that keeps the size goes in place; one that changes it moves the record
to a free one of the new size (or the heap's end) and puts the old one on the free list for its
size. Ids are never removed (an outlet is tracked for the book's life), so the index needs no
tombstones. The index keeps no hashes: a probe compares the id in the record, and growing the
index hashes every id again with CRC-32 (not `hash()`, which is salted per process: an index
pickled by one process is probed by another after a restore).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from struct import Struct
from zlib import crc32

# A record's head: a u32 of the state's length << 8 | the id's length, when the id has fewer than
# 255 bytes and the state fewer than 2**24; else a u32 of 255 and the two lengths as u32s.
_SHORT_HEAD = Struct("<I")
_LONG_HEAD = Struct("<II")
_LONG = 0xFF
_ALIGN = 4  # records start at multiples of 4: an entry holds position // 4 + 1 in 32 bits
_MAX_HEAP = _ALIGN * 0xFFFF_FFFE
_INITIAL_SLOTS = 16


def record_size(needed: int) -> int:
    """Bytes a record of `needed` bytes takes: the room lets a growing state grow in place a while."""
    if needed <= 128:
        return (needed + 3) & -4
    step = 1 << (needed.bit_length() - 4)
    return (needed + step - 1) & -step


def record_head(id_size: int, state_size: int) -> bytes:
    if id_size < _LONG and state_size < 1 << 24:
        return _SHORT_HEAD.pack(state_size << 8 | id_size)
    return _SHORT_HEAD.pack(_LONG) + _LONG_HEAD.pack(id_size, state_size)


class ColdOutlets:
    """Outlet id -> packed state (bytes), for outlets at rest."""

    __slots__ = ("_index", "_mask", "_heap", "_free", "_count", "free_bytes")

    def __init__(self) -> None:
        self._index = array("I", bytes(4 * _INITIAL_SLOTS))  # record position // 4 + 1; 0: empty slot
        self._mask = _INITIAL_SLOTS - 1
        self._heap = bytearray()
        self._free: dict[int, array] = {}  # record size -> positions of free records of that size
        self._count = 0
        self.free_bytes = 0

    def __len__(self) -> int:
        return self._count

    def heap_bytes(self) -> int:
        """Bytes of the heap and the index (what the outlets at rest cost, free records included)."""
        return len(self._heap) + self._index.itemsize * len(self._index)

    def _record(self, position: int) -> tuple[int, int, int]:
        """(where its id starts, the id's length, the state's length) of the record at `position`."""
        (lengths,) = _SHORT_HEAD.unpack_from(self._heap, position)
        if lengths & 0xFF != _LONG:
            return position + 4, lengths & 0xFF, lengths >> 8
        id_size, state_size = _LONG_HEAD.unpack_from(self._heap, position + 4)
        return position + 12, id_size, state_size

    def _find(self, key: bytes) -> tuple[int, int, int, int]:
        """(slot, record position, where the state starts, the state's length) of `key`; the
        position is -1 when it is absent, and the slot is where it goes."""
        index, mask, heap, unpack = self._index, self._mask, self._heap, _SHORT_HEAD.unpack_from
        slot = crc32(key) & mask
        size = len(key)
        while entry := index[slot]:
            position = (entry - 1) * _ALIGN
            (lengths,) = unpack(heap, position)
            if lengths & 0xFF != _LONG:
                if lengths & 0xFF == size:
                    start = position + 4
                    if heap[start:start + size] == key:
                        return slot, position, start + size, lengths >> 8
            else:
                start, id_size, state_size = self._record(position)
                if id_size == size and heap[start:start + size] == key:
                    return slot, position, start + size, state_size
            slot = (slot + 1) & mask
        return slot, -1, 0, 0

    def get(self, outlet_id: str) -> bytes | None:
        return self.take(outlet_id)[0]

    def take(self, outlet_id: str) -> tuple[bytes | None, int]:
        """The outlet's packed state (None if it has none) and a handle that lets the `put` of its
        next state skip the search."""
        slot, position, start, size = self._find(outlet_id.encode("utf-8", "surrogatepass"))
        if position < 0:
            return None, 0
        return bytes(self._heap[start:start + size]), slot << 32 | self._index[slot]

    def put(self, outlet_id: str, packed: bytes, handle: int = 0) -> bool:
        """Store `packed` as the outlet's state; True when the outlet was not here before.
        `handle` is what `take` returned with its previous state, if anything."""
        key = outlet_id.encode("utf-8", "surrogatepass")
        slot, entry = handle >> 32, handle & 0xFFFF_FFFF
        position = -1
        if entry and slot < len(self._index) and self._index[slot] == entry:
            # the slot still holds that record (no move, no growth since) if it holds this id
            position = (entry - 1) * _ALIGN
            start, id_size, size = self._record(position)
            if id_size == len(key) and self._heap[start:start + id_size] == key:
                start += id_size
            else:
                position = -1
        if position < 0:
            slot, position, start, size = self._find(key)
        record = record_head(len(key), len(packed)) + key + packed
        new_size = record_size(len(record))
        if position >= 0:
            old_size = record_size(start + size - position)
            if new_size == old_size:
                self._heap[position:position + len(record)] = record  # same length: in place
                return False
            self._release(position, old_size)
            self._index[slot] = self._write(record, new_size)
            return False
        self._index[slot] = self._write(record, new_size)
        self._count += 1
        if 3 * self._count > 2 * len(self._index):
            self._grow()
        return True

    def _write(self, record: bytes, size: int) -> int:
        """Write `record` into a free record of `size` bytes or at the heap's end; its index entry."""
        heap = self._heap
        free = self._free.get(size)
        if free:
            position = free.pop()
            self.free_bytes -= size
            heap[position:position + len(record)] = record
        else:
            position = len(heap)
            if position + size > _MAX_HEAP:
                raise MemoryError(f"outlets at rest fill {position:,} bytes: a book holds at most {_MAX_HEAP:,}")
            heap += record
            heap += bytes(size - len(record))
        return position // _ALIGN + 1

    def _release(self, position: int, size: int) -> None:
        free = self._free.get(size)
        if free is None:
            free = self._free[size] = array("Q")
        free.append(position)
        self.free_bytes += size

    def _grow(self) -> None:
        """Double the index, hashing every id again (~0.7 s per million ids, once per doubling)."""
        slots = 2 * len(self._index)
        index, mask, heap, record = array("I", bytes(4 * slots)), slots - 1, self._heap, self._record
        for entry in self._index:
            if entry:
                start, id_size, _ = record((entry - 1) * _ALIGN)
                slot = crc32(heap[start:start + id_size]) & mask
                while index[slot]:
                    slot = (slot + 1) & mask
                index[slot] = entry
        self._index, self._mask = index, mask

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every (outlet id, packed state), in no particular order (for tests and benchmarks)."""
        heap = self._heap
        for entry in self._index:
            if entry:
                start, id_size, state_size = self._record((entry - 1) * _ALIGN)
                end = start + id_size
                yield heap[start:end].decode("utf-8", "surrogatepass"), bytes(heap[end:end + state_size])
