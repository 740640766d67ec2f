"""The facts tables' format: the accepted raw events of an entity partition, in batches.

key   `[partition, writer instance, batch number]` (JSON): unique per batch, so a batch written
      twice (re-read after a crash) is one table entry, and a snapshot can name the batches it holds
value `{"p": partition, "f": [[entity key, event id, reference instant (us), raw event], ...]}`
"""

from __future__ import annotations

import orjson

from stream.kafka.tables import stored

Fact = list  # [entity key, event id, reference instant in us, raw event as str]


def encode_fact_batch(partition: int, instance: str, number: int, facts: list[Fact]) -> tuple[bytes, bytes]:
    """(table key, table value) of one batch."""
    return orjson.dumps([partition, instance, number]), orjson.dumps({"p": partition, "f": facts})


def fact_batch_partition_and_id(key) -> tuple[int, tuple[str, int]]:
    """A facts-table key's partition and batch id (writer instance, batch number)."""
    partition, instance, number = stored(key)
    return partition, (instance, number)


def decode_fact_batch(value) -> tuple[int, list[Fact]]:
    """A facts-table value as (partition, facts)."""
    batch = stored(value)
    return batch["p"], batch["f"]
