"""Outlets at rest without a Python object each: one heap of records and an open-addressing index.

A dict of packed bytes (outlet id -> bytes) costs ~300 bytes per outlet at a million outlets
(bench/scaling.py, tenth session): the dict slot, an id string and a bytes object per outlet
(~170 bytes walked) and the allocator's slack around two million small objects. Here an outlet at
rest is a record in one `bytearray` -- a 12-byte head, its id's UTF-8 bytes and its packed state
(outlet_packing.py) -- found through an `array` of 64-bit entries, each the record's place in the
heap and the CRC-32 of its id. Neither holds a Python object per outlet, so the cyclic collector
has nothing to walk, the allocator nothing to fragment, and a snapshot pickles three buffers.

Records never move while they fit: a rewrite of the same or a smaller size goes in place. One that
outgrew its record moves to a fresh one with a quarter more room, and the old record joins a free
list for its size, reused by the next record of exactly that size. Ids are never removed (an outlet
is tracked for the book's life), so the index needs no tombstones.

The hash is CRC-32 rather than `hash()`, which is salted per process: an index pickled by one
process is probed by another after a restore.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from struct import Struct
from zlib import crc32

_HEAD = Struct("<III")  # id length, room after the head (id + state), state length
_ALIGN = 16  # records start at multiples of 16: an entry stores offset // 16, in 32 bits
_HASH_BITS = 0xFFFF_FFFF
_INITIAL_SLOTS = 16


def _record_size(needed: int) -> int:
    return (needed + _ALIGN - 1) & -_ALIGN


class ColdOutlets:
    """Outlet id -> packed state (bytes), for outlets at rest."""

    __slots__ = ("_index", "_mask", "_heap", "_free", "_count", "free_bytes")

    def __init__(self) -> None:
        # entry: (record offset // _ALIGN + 1) << 32 | crc32(id); 0 is an empty slot
        self._index = array("Q", bytes(8 * _INITIAL_SLOTS))
        self._mask = _INITIAL_SLOTS - 1
        self._heap = bytearray()
        self._free: dict[int, array] = {}  # record size -> offsets of free records of that size
        self._count = 0
        self.free_bytes = 0

    def __len__(self) -> int:
        return self._count

    def heap_bytes(self) -> int:
        """Bytes of the heap and the index (what the outlets at rest cost, free records included)."""
        return len(self._heap) + self._index.itemsize * len(self._index)

    def _find(self, key: bytes, hashed: int) -> tuple[int, int]:
        """(slot, record offset) of `key`; the offset is -1 when it is absent and the slot is where
        it goes."""
        index, mask, heap = self._index, self._mask, self._heap
        slot = hashed & mask
        size = len(key)
        while entry := index[slot]:
            if entry & _HASH_BITS == hashed:
                offset = ((entry >> 32) - 1) * _ALIGN
                start = offset + _HEAD.size
                if heap[start:start + size] == key and _HEAD.unpack_from(heap, offset)[0] == size:
                    return slot, offset
            slot = (slot + 1) & mask
        return slot, -1

    def get(self, outlet_id: str) -> bytes | None:
        key = outlet_id.encode("utf-8", "surrogatepass")
        _, offset = self._find(key, crc32(key))
        if offset < 0:
            return None
        heap = self._heap
        key_size, _, size = _HEAD.unpack_from(heap, offset)
        start = offset + _HEAD.size + key_size
        return bytes(heap[start:start + size])

    def put(self, outlet_id: str, packed: bytes) -> bool:
        """Store `packed` as the outlet's state; True when the outlet was not here before."""
        key = outlet_id.encode("utf-8", "surrogatepass")
        hashed = crc32(key)
        slot, offset = self._find(key, hashed)
        heap = self._heap
        if offset >= 0:
            key_size, room, _ = _HEAD.unpack_from(heap, offset)
            if key_size + len(packed) <= room:
                start = offset + _HEAD.size + key_size
                heap[start:start + len(packed)] = packed  # same length: in place
                _HEAD.pack_into(heap, offset, key_size, room, len(packed))
                return False
            self._release(offset, _HEAD.size + room)
            needed = _HEAD.size + key_size + len(packed)
            self._index[slot] = self._write(key, packed, _record_size(needed + needed // 4)) | hashed
            return False
        self._index[slot] = self._write(key, packed, _record_size(_HEAD.size + len(key) + len(packed))) | hashed
        self._count += 1
        if 3 * self._count > 2 * len(self._index):
            self._grow()
        return True

    def _write(self, key: bytes, packed: bytes, size: int) -> int:
        """Write a record of `size` bytes; its index entry without the hash."""
        record = _HEAD.pack(len(key), size - _HEAD.size, len(packed)) + key + packed
        heap = self._heap
        free = self._free.get(size)
        if free:
            offset = free.pop()
            self.free_bytes -= size
            heap[offset:offset + len(record)] = record
        else:
            offset = len(heap)
            heap += record
            heap += bytes(size - len(record))
        return (offset // _ALIGN + 1) << 32

    def _release(self, offset: int, size: int) -> None:
        free = self._free.get(size)
        if free is None:
            free = self._free[size] = array("Q")
        free.append(offset)
        self.free_bytes += size

    def _grow(self) -> None:
        """Double the index (a pass over every entry: ~0.3 s at a million outlets)."""
        slots = 2 * len(self._index)
        index, mask = array("Q", bytes(8 * slots)), slots - 1
        for entry in self._index:
            if entry:
                slot = entry & mask  # mask < 2**32: the bits below it are the hash's
                while index[slot]:
                    slot = (slot + 1) & mask
                index[slot] = entry
        self._index, self._mask = index, mask

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every (outlet id, packed state), in no particular order (for tests and benchmarks)."""
        heap = self._heap
        for entry in self._index:
            if entry:
                offset = ((entry >> 32) - 1) * _ALIGN
                key_size, _, size = _HEAD.unpack_from(heap, offset)
                start = offset + _HEAD.size
                yield (heap[start:start + key_size].decode("utf-8", "surrogatepass"),
                       bytes(heap[start + key_size:start + key_size + size]))
