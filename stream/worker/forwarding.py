"""Where an accepted input record belongs: this agent's partition, or another one it is forwarded to.

An entity's state lives in one partition: the one Kafka's default partitioner (murmur2 of the
entity key, stream/stages/outgoing.py) gives its key on its family's topics. A record arrives
elsewhere when it came through the mixed topic `sales.events`, when its key is not the entity
key, or when its producer partitions another way -- librdkafka's default (CRC32: confluent-kafka,
kcat) puts about 7 in 8 keys elsewhere on 8 partitions. Such a record is forwarded, unchanged but
for its key, to its entity's partition of its own type's topic, and applied only there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from stream.core.engine import Family
from stream.stages.outgoing import Headers, Outgoing, kafka_partition

# Says where a forwarded record came from ("topic/partition/offset"): for people reading the
# typed topics, which then hold both the producer's record and the forwarded copy.
FORWARDED_FROM_HEADER = "kpi-forwarded-from"


@dataclass(frozen=True, slots=True)
class Arrival:
    """Where an accepted record arrived and what it is."""

    family: Family | None  # the agent's family; None for the router of sales.events
    topic: str
    partition: int
    offset: int
    key: bytes | None  # as the producer sent it
    timestamp_ms: int | None


def forward_partition(arrival: Arrival, event_family: Family, entity_key: bytes, partitions: int) -> int | None:
    """The partition to forward the record to (of its type's topic, `partitions` of them), or None
    when it is already where its entity's state lives."""
    target = kafka_partition(entity_key, partitions)
    if arrival.family is event_family and arrival.key == entity_key and arrival.partition == target:
        return None
    return target


def forwarded(arrival: Arrival, entity_key: bytes, raw: bytes, partition: int,
              headers: Sequence[tuple[str, bytes]] = ()) -> Outgoing:
    """The forwarded copy: the same bytes and Kafka timestamp (the reference instant a re-read
    copy is judged and deduplicated on), the entity key, the producer's headers and where it came from."""
    origin = f"{arrival.topic}/{arrival.partition}/{arrival.offset}".encode()
    kept_headers: Headers = [*((name, value) for name, value in headers if name != FORWARDED_FROM_HEADER),
                             (FORWARDED_FROM_HEADER, origin)]
    return Outgoing(partition, entity_key, raw, kept_headers, timestamp_ms=arrival.timestamp_ms)
