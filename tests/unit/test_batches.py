"""Batched sends pick the partition Kafka's default partitioner picks (stream/batches.py):
scope partials stored before batching, and consumers keyed on kpi.updates, depend on it."""

import random

from aiokafka.partitioner import DefaultPartitioner

from stream.batches import key_partition


def test_key_partition_agrees_with_the_default_partitioner_for_every_key_and_partition_count():
    rng = random.Random(5)
    partitioner = DefaultPartitioner()
    for _ in range(3000):
        key = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        partitions = rng.randrange(1, 64)
        everything = list(range(partitions))
        assert key_partition(key, partitions) == partitioner(key, everything, everything)


def test_a_scope_key_lands_where_faust_sent_it_before_partials_were_batched():
    scope_key = b'["outlet","territory","JKT-01"]'
    assert key_partition(scope_key, 8) == DefaultPartitioner()(scope_key, list(range(8)), list(range(8)))
