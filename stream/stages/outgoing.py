"""Messages on their way to Kafka, and the partition Kafka's default partitioner gives a key.

Pure: the stages build `Outgoing` messages; stream/kafka/batches.py sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from aiokafka.partitioner import murmur2  # a pure function: Kafka's default partitioner's hash

from stream.core.jsonbytes import kept

Headers = Sequence[tuple[str, bytes]]


@dataclass(slots=True)
class Outgoing:
    partition: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    items: int = 1  # what this message carries (e.g. facts)
    timestamp_ms: int | None = None  # None: the producer's clock at the send


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (and Faust's send without a partition) picks.
    aiokafka's murmur2 is pure Python, ~11 us a key: callers keep what they compute."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# partition count -> key -> partition. Plain dicts of bytes and ints, which the cyclic GC never
# walks (an lru_cache links its entries in tracked objects: 131,072 of them once the update keys of
# a field force had filled it, walked in every full collection).
_PARTITION_OF: dict[int, dict[bytes, int]] = {}


def key_partition(key: bytes, partitions: int) -> int:
    """`kafka_partition`, remembered: for a bounded set of keys sent again and again (scopes)."""
    known = _PARTITION_OF.get(partitions)
    if known is None:
        known = _PARTITION_OF[partitions] = {}
    partition = known.get(key)
    if partition is None:
        partition = known[kept(key)] = kafka_partition(key, partitions)  # keys are often orjson's
    return partition
