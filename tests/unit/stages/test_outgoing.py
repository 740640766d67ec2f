"""Batched sends pick the partition Kafka's default partitioner picks (stream/stages/outgoing.py):
scope partials stored before batching, and consumers keyed on kpi.updates, depend on it."""

import gc
import random

from aiokafka.partitioner import DefaultPartitioner

from stream.stages import outgoing
from stream.stages.outgoing import kafka_partition, key_partition


def test_key_partition_agrees_with_the_default_partitioner_for_every_key_and_partition_count():
    rng = random.Random(5)
    partitioner = DefaultPartitioner()
    for _ in range(3000):
        key = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        partitions = rng.randrange(1, 64)
        everything = list(range(partitions))
        assert key_partition(key, partitions) == partitioner(key, everything, everything)
        assert kafka_partition(key, partitions) == partitioner(key, everything, everything)


def test_a_scope_key_lands_where_faust_sent_it_before_partials_were_batched():
    scope_key = b'["outlet","territory","JKT-01"]'
    assert key_partition(scope_key, 8) == DefaultPartitioner()(scope_key, list(range(8)), list(range(8)))


def test_remembered_partitions_are_never_on_the_collectors_walk():
    for n in range(500):
        key_partition(f'["outlet","rep","r{n}"]'.encode(), 8)
    assert not any(gc.is_tracked(known) for known in outgoing._PARTITION_OF.values())


def test_kafka_partition_hashes_as_the_java_client_does():
    # Kafka's own vectors for Utils.murmur2 (clients' UtilsTest); the Java partitioner takes
    # toPositive(murmur2(key)) % partitions
    java = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
            b"a-little-bit-longer-string": -1486304829, b"abc": 479470107,
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    for key, murmur2 in java.items():
        for partitions in (1, 4, 8, 12, 1000):
            assert kafka_partition(key, partitions) == (murmur2 & 0x7FFFFFFF) % partitions, (key, partitions)
