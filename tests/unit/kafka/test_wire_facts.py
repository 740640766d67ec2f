"""The facts tables' format (stream/kafka/wire_facts.py): a batch's key names its partition and
batch id, in either form faust hands keys back, and its value round-trips its facts."""

from stream.kafka.wire_facts import decode_fact_batch, encode_fact_batch, fact_batch_partition_and_id

FACTS = [["OUT-1", "evt-1", 1_700_000_000_000_000, '{"event_id":"evt-1"}'],
         ["OUT-2", "evt-2", 1_700_000_000_000_001, '{"event_id":"evt-2"}']]


def test_a_batch_round_trips_and_its_key_names_partition_and_batch_in_either_stored_form():
    key, value = encode_fact_batch(3, "abc123", 17, FACTS)
    assert fact_batch_partition_and_id(key) == (3, ("abc123", 17))
    assert fact_batch_partition_and_id([3, "abc123", 17]) == (3, ("abc123", 17))  # as faust's recovery hands it back
    assert decode_fact_batch(value) == (3, FACTS)
